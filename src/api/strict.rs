//! Request bodies documented by their poem-openapi schema but parsed by serde: types are
//! strict (poem-openapi would turn the number 5 into the string "5"), unknown fields are
//! refused, and every error names the field it is about.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, Type};
use serde::de::DeserializeOwned;

pub struct Strict<T>(pub T);

impl<T: Type + DeserializeOwned> Type for Strict<T> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry)
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl<T: Type + DeserializeOwned> ParseFromJSON for Strict<T> {
    fn parse_from_json(value: Option<serde_json::Value>) -> ParseResult<Self> {
        let value = value.unwrap_or_default();
        // Every strict body is an object; serde would also read a struct from an array.
        if !value.is_object() {
            return Err(ParseError::custom("the body must be a JSON object"));
        }
        serde_path_to_error::deserialize(value)
            .map(Strict)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if path == "." {
                    ParseError::custom(inner.to_string())
                } else {
                    ParseError::custom(format!("{path}: {inner}"))
                }
            })
    }
}

/// A JSON body that may be absent (empty), parsed strictly when present, and documented as
/// an optional request body. For endpoints the original's clients call both with and
/// without a body.
pub struct OptionalBody<T>(pub Option<T>);

impl<'a, T: Type + DeserializeOwned + Send> poem_openapi::ApiExtractor<'a> for OptionalBody<T> {
    const TYPES: &'static [poem_openapi::ApiExtractorType] =
        &[poem_openapi::ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<poem_openapi::registry::MetaRequest> {
        Some(poem_openapi::registry::MetaRequest {
            description: None,
            content: vec![poem_openapi::registry::MetaMediaType {
                content_type: "application/json; charset=utf-8",
                schema: T::schema_ref(),
            }],
            required: false,
        })
    }

    async fn from_request(
        _req: &'a poem::Request,
        body: &mut poem::RequestBody,
        _opts: poem_openapi::ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let bytes = body.take()?.into_bytes().await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(None));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(&mut deserializer)
            .map(|v| OptionalBody(Some(v)))
            .map_err(|e| {
                poem::Error::from_string(
                    format!("parse request payload error: {}: {}", e.path(), e.inner()),
                    poem::http::StatusCode::BAD_REQUEST,
                )
            })
    }
}
