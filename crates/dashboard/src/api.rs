//! The JSON endpoints. Query parameters are parsed here, strictly: an unknown or repeated
//! parameter, or a value out of range, is a `400` naming it, never silently ignored.

use std::collections::HashMap;
use std::str::FromStr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use leasehold_core::{ItemFilter, ItemId, ItemStatus, StoreError, WorkerState};

use crate::snapshot;
use crate::AppState;

/// Items `/api/items` lists without `limit`.
const DEFAULT_ITEMS_LIMIT: u32 = 50;
/// The most `/api/items` lists at once.
const MAX_ITEMS_LIMIT: u32 = 1000;

/// An error answer: its status and a `{"error": …}` body.
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    pub(crate) fn bad_request(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }

    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidInput(m) => ApiError(StatusCode::BAD_REQUEST, m),
            other => {
                tracing::warn!(error = %other, "dashboard store read failed");
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("store error: {other}"),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The query as a map, refusing a malformed query, unknown names and repeats.
pub(crate) fn params(query: Params, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::bad_request(format!("bad query: {e}")))?;
    let mut map = HashMap::new();
    for (k, v) in pairs {
        if !allowed.contains(&k.as_str()) {
            let expected = if allowed.is_empty() {
                "this endpoint takes no parameters".to_string()
            } else {
                format!("expected {}", allowed.join(", "))
            };
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {k:?}; {expected}"
            )));
        }
        if map.insert(k.clone(), v).is_some() {
            return Err(ApiError::bad_request(format!(
                "query parameter {k:?} given more than once"
            )));
        }
    }
    Ok(map)
}

/// `GET /api/status`.
pub(crate) async fn status(
    State(app): State<AppState>,
    query: Params,
) -> Result<Response, ApiError> {
    params(query, &[])?;
    let now = app.cfg.clock.now();
    let status = snapshot::status(app.store.as_ref(), now, app.cfg.dead_after_missed).await?;
    Ok(Json(status).into_response())
}

/// `GET /api/workers[?state=alive|dead|stopped]`.
pub(crate) async fn workers(
    State(app): State<AppState>,
    query: Params,
) -> Result<Response, ApiError> {
    let p = params(query, &["state"])?;
    let state = match p.get("state").map(String::as_str) {
        None => None,
        Some(s) => Some(
            WorkerState::ALL
                .into_iter()
                .find(|w| w.as_str() == s)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "unknown state {s:?}; expected alive, dead or stopped"
                    ))
                })?,
        ),
    };
    let nodes = app.store.nodes_list().await?;
    let now = app.cfg.clock.now();
    let views: Vec<_> =
        snapshot::worker_views(app.store.as_ref(), &nodes, now, app.cfg.dead_after_missed)
            .await?
            .into_iter()
            .filter(|v| state.is_none_or(|s| v.state == s))
            .collect();
    Ok(Json(views).into_response())
}

/// `GET /api/items?status=…&kind=…&limit=…&after=…`.
pub(crate) async fn items(
    State(app): State<AppState>,
    query: Params,
) -> Result<Response, ApiError> {
    let p = params(query, &["status", "kind", "limit", "after"])?;
    let filter = items_filter(&p)?;
    let items = app.store.items_list(&filter).await?;
    Ok(Json(items).into_response())
}

/// The listing filter `p` asks for.
fn items_filter(p: &HashMap<String, String>) -> Result<ItemFilter, ApiError> {
    let status = p
        .get("status")
        .map(|s| ItemStatus::from_str(s).map_err(ApiError::bad_request))
        .transpose()?;
    let kind = match p.get("kind") {
        Some(k) if k.trim().is_empty() => {
            return Err(ApiError::bad_request("kind must not be empty"))
        }
        k => k.cloned(),
    };
    let limit = match p.get("limit") {
        None => DEFAULT_ITEMS_LIMIT,
        Some(raw) => match raw.trim().parse::<u32>() {
            Ok(n) if (1..=MAX_ITEMS_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit {raw:?} must be a whole number from 1 to {MAX_ITEMS_LIMIT}"
                )))
            }
        },
    };
    let after = p
        .get("after")
        .map(|raw| ItemId::from_str(raw).map_err(|e| ApiError::bad_request(format!("after: {e}"))))
        .transpose()?;
    Ok(ItemFilter {
        status,
        kind,
        limit,
        after,
        ..ItemFilter::default()
    })
}
