//! One error shape for every failure: `{error, message, details?}` with the status that
//! fits, whether the error comes from our checks or from the HTTP framework.

use poem::http::StatusCode;
use poem::Response;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::commands::CommandError;
use decide::Rejection;

#[derive(Object, Debug, Clone, serde::Serialize)]
pub struct ErrorBody {
    /// A stable name for the kind of error: ValidationError, Unauthorized, NotFound, ...
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[derive(ApiResponse, Debug)]
pub enum ApiError {
    /// The request is malformed or fails validation.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// A bearer token is required and was missing or wrong.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The token's role may not do this.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with the current state (for example a duplicate name).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The token is over its request rate; `Retry-After` says when to come back.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>),
    /// The event log (NATS) is unreachable or too contended; retry later.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn body(
    error: &str,
    message: impl Into<String>,
    details: Option<serde_json::Value>,
) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: error.into(),
        message: message.into(),
        details,
    })
}

impl ApiError {
    /// The human-readable message, for places that report errors per item.
    pub fn into_message(self) -> String {
        match self {
            ApiError::BadRequest(b)
            | ApiError::Unauthorized(b)
            | ApiError::Forbidden(b)
            | ApiError::NotFound(b)
            | ApiError::TooManyRequests(b)
            | ApiError::Conflict(b)
            | ApiError::Unavailable(b) => b.0.message,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest(body("ValidationError", message, None))
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::BadRequest(body(
            "ValidationError",
            format!("{field}: {message}"),
            Some(serde_json::json!({"validationErrors": [{"field": field, "message": message}]})),
        ))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound(body("NotFound", message, None))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(body("Forbidden", message, None))
    }

    pub fn too_many_requests(message: impl Into<String>) -> Self {
        ApiError::TooManyRequests(body("TooManyRequests", message, None))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::Conflict(body("Conflict", message, None))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::Unavailable(body("ServiceUnavailable", message, None))
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Invalid(errors) => {
                let message = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let list: Vec<_> = errors
                    .iter()
                    .map(|e| serde_json::json!({"field": e.field, "message": e.message}))
                    .collect();
                ApiError::BadRequest(body(
                    "ValidationError",
                    message,
                    Some(serde_json::json!({ "validationErrors": list })),
                ))
            }
            Rejection::NotFound(m) => ApiError::not_found(m),
            Rejection::NameTaken(m) | Rejection::WrongState(m) | Rejection::LeaseLost(m) => {
                ApiError::Conflict(body("Conflict", m, None))
            }
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Rejected(r) => r.into(),
            CommandError::Contended => {
                ApiError::unavailable("the event log is busy with concurrent writes; retry")
            }
            CommandError::Unavailable(m) => {
                ApiError::unavailable(format!("the event log is unavailable: {m}"))
            }
            CommandError::NotWriter => {
                ApiError::unavailable("the project has no writer right now; retry")
            }
        }
    }
}

/// Turns any error that reached the top without our JSON body (unknown route, wrong
/// method, unparsable body, wrong content type, body too large) into one.
pub fn to_json_response(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    // A query or path parameter that does not parse (an unknown status, say): name it.
    if let Some(param) = err.downcast_ref::<poem_openapi::error::ParseParamError>() {
        let message = param.reason.clone();
        return poem::IntoResponse::into_response(ApiError::validation(param.name, message));
    }
    let status = err.status();
    let name = match status {
        StatusCode::BAD_REQUEST => "ValidationError",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
        StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        s if s.is_server_error() => "InternalError",
        _ => "Error",
    };
    let message = match status {
        StatusCode::NOT_FOUND => "no such route".to_string(),
        StatusCode::METHOD_NOT_ALLOWED => "this method is not allowed on this route".to_string(),
        _ => err.to_string(),
    };
    if status.is_server_error() {
        tracing::error!(%status, "request failed: {message}");
    }
    let body = serde_json::to_vec(&ErrorBody {
        error: name.into(),
        message,
        details: None,
    })
    .unwrap_or_default();
    let mut response = Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8");
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body was not read, so the connection cannot carry another
        // request: tell the client not to reuse it.
        response = response.header("connection", "close");
    }
    response.body(body)
}
