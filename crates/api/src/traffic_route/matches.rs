//! Which requests an HTTP rule takes.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Conditions on a request. All that are given must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// The request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Request headers; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderMatch>,
    /// Query parameters; all must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub query_params: Vec<QueryParamMatch>,
    /// The request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::schema::no_null_in_enum)]
    pub method: Option<HttpMethod>,
}

/// How a request path is matched.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.type == 'RegularExpression' || self.value.startsWith('/')").message("an Exact or PathPrefix path must start with '/'"))]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (whole path segments: `/api` matches `/api` and `/api/v1`, not
    /// `/apis`) or `RegularExpression` (RE2 syntax, must match the whole path).
    #[serde(default, rename = "type")]
    pub kind: PathMatchType,
    /// The path, or the regular expression.
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch {
            kind: PathMatchType::PathPrefix,
            value: "/".into(),
        }
    }
}

/// How a path is compared: Exact, PathPrefix or RegularExpression.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[schemars(transform = crate::schema::plain_enum)]
pub enum PathMatchType {
    /// The whole path, character for character.
    Exact,
    /// Whole leading path segments: `/api` matches `/api` and `/api/v1`, not `/apis`.
    #[default]
    PathPrefix,
    /// An RE2 regular expression that must match the whole path.
    RegularExpression,
}

/// How a header or query value is compared: Exact or RegularExpression (RE2, whole value).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[schemars(transform = crate::schema::plain_enum)]
pub enum StringMatchType {
    /// The whole value, character for character.
    #[default]
    Exact,
    /// An RE2 regular expression that must match the whole value.
    RegularExpression,
}

/// A condition on one request header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub kind: StringMatchType,
    /// The header's name, case-insensitive.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The value, or the regular expression it must match.
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// A condition on one query parameter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryParamMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub kind: StringMatchType,
    /// The parameter's name, case-sensitive.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The value, or the regular expression it must match.
    #[schemars(length(max = 1024))]
    pub value: String,
}

/// An HTTP method: GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE or PATCH.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
#[schemars(transform = crate::schema::plain_enum)]
pub enum HttpMethod {
    /// `GET`: fetch a resource.
    Get,
    /// `HEAD`: a `GET` answered without the body.
    Head,
    /// `POST`: submit data for the resource to process.
    Post,
    /// `PUT`: replace a resource.
    Put,
    /// `DELETE`: remove a resource.
    Delete,
    /// `CONNECT`: open a tunnel through the server.
    Connect,
    /// `OPTIONS`: ask what the resource allows.
    Options,
    /// `TRACE`: have the request echoed back.
    Trace,
    /// `PATCH`: change part of a resource.
    Patch,
}

impl HttpMethod {
    /// The method as it appears on the wire, e.g. `GET`.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Connect => "CONNECT",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Trace => "TRACE",
            HttpMethod::Patch => "PATCH",
        }
    }
}
