//! JSON answers where the router itself would answer with an empty body.

use axum::http::{Method, StatusCode, Uri};
use runtime::http::ApiError;
use serde_json::json;

/// No route matches the path.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("no such route").with_detail(json!({ "path": uri.path() }))
}

/// The path exists but not with this method; axum adds the `Allow` header.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        .with_detail(json!({ "method": method.as_str(), "path": uri.path() }))
}
