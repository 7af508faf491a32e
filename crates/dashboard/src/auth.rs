//! The bearer-token check in front of the API and the metrics.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{AppState, DashboardError};

/// A token must be non-empty visible ASCII, so it fits an `Authorization` header as is.
pub(crate) fn validate_token(token: &str) -> Result<(), DashboardError> {
    if token.is_empty() {
        return Err(DashboardError::InvalidToken("the token is empty".into()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DashboardError::InvalidToken(
            "the token must be visible ASCII characters without spaces".into(),
        ));
    }
    Ok(())
}

/// Lets a request through when no token is configured or it carries `Bearer <token>`.
pub(crate) async fn require_token(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(expected) = app.cfg.token.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same(t.as_bytes(), expected.as_bytes()) => next.run(req).await,
        Some(_) => unauthorized("wrong bearer token"),
        None => unauthorized("missing Authorization: Bearer <token> header"),
    }
}

fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

/// Compares in time independent of where the first difference is, so response timing does
/// not reveal the token byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
