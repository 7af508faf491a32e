//! The JSON endpoints. Query parameters are parsed here, strictly: an unknown or repeated
//! parameter, or a value out of range, is a `400` naming it, never silently ignored.

use std::collections::HashMap;
use std::str::FromStr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use serde::Serialize;

use leasehold_core::durable::{CacheKeyInfo, CheckpointRecord, LedgerEntry};
use leasehold_core::{
    Attempt, Checkpoint, Item, ItemFilter, ItemId, ItemStatus, StoreError, WorkerState,
};

use crate::snapshot;
use crate::AppState;

/// Items `/api/items` lists without `limit`.
const DEFAULT_ITEMS_LIMIT: u32 = 50;
/// The most `/api/items` lists at once.
const MAX_ITEMS_LIMIT: u32 = 1000;

/// An error answer: its status and a `{"error": …}` body.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

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
            // A write refused for the item's state: the store's message names the state.
            e @ StoreError::InvalidState { .. } => ApiError(StatusCode::CONFLICT, e.to_string()),
            e @ StoreError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
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

pub(crate) type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

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

/// `GET /api/items?status=…&kind=…&group=…&id=…&limit=…&after=…`: items by id, at most
/// `limit`; the next page is `after=` the last id. `id` picks one item (listed only if it
/// matches the other filters too).
pub(crate) async fn items(
    State(app): State<AppState>,
    query: Params,
) -> Result<Response, ApiError> {
    let p = params(query, &["status", "kind", "group", "id", "limit", "after"])?;
    let filter = items_filter(&p)?;
    let id = p
        .get("id")
        .map(|raw| ItemId::from_str(raw).map_err(|e| ApiError::bad_request(format!("id: {e}"))))
        .transpose()?;
    let items = match id {
        None => app.store.items_list(&filter).await?,
        Some(id) => app
            .store
            .item_get(id)
            .await?
            .filter(|i| {
                filter.status.is_none_or(|s| i.status == s)
                    && filter.kind.as_ref().is_none_or(|k| &i.kind == k)
                    && filter
                        .group_id
                        .as_ref()
                        .is_none_or(|g| i.group_id.as_ref() == Some(g))
                    && filter.after.is_none_or(|a| i.id > a)
            })
            .into_iter()
            .collect(),
    };
    Ok(Json(items).into_response())
}

/// The most checkpoints, ledger entries and cache keys the item page lists (newest first).
pub const ITEM_PAGE_ROWS: u32 = 100;

/// What `GET /api/items/{id}` answers.
#[derive(Serialize)]
struct ItemPage {
    /// The item: input, output, error, progress, timestamps, lease.
    item: Item,
    /// Checkpoints saved with `checkpoint_save`, oldest first.
    checkpoints: Vec<Checkpoint>,
    /// The durable-execution records of the item, when the dashboard was given the durable
    /// store (`null` otherwise).
    durable: Option<DurableView>,
    /// The item's ended attempts, oldest first (the last the store keeps).
    history: Vec<Attempt>,
}

#[derive(Serialize)]
struct DurableView {
    /// Durable checkpoints with their evidence and verification, newest first.
    checkpoints: Vec<CheckpointRecord>,
    /// Tool-ledger entries, newest first.
    ledger: Vec<LedgerEntry>,
    /// LLM cache keys, newest first.
    cache: Vec<CacheKeyInfo>,
}

/// `GET /api/items/{id}`: one item with its checkpoints, tool-ledger entries and LLM cache
/// keys. `400` for an id that is not one, `404` for an item that does not exist.
pub(crate) async fn item(
    State(app): State<AppState>,
    Path(raw): Path<String>,
    query: Params,
) -> Result<Response, ApiError> {
    params(query, &[])?;
    let id = ItemId::from_str(&raw).map_err(|e| ApiError::bad_request(format!("id: {e}")))?;
    let Some(item) = app.store.item_get(id).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no item {id} in the store"),
        ));
    };
    let checkpoints = app.store.checkpoints_list(id).await?;
    let history = app.store.item_attempts(id).await?;
    let durable = match &app.cfg.durable {
        None => None,
        Some(d) => Some(DurableView {
            checkpoints: d.checkpoints_of(id, ITEM_PAGE_ROWS).await?,
            ledger: d.ledger_history(id, ITEM_PAGE_ROWS).await?,
            cache: d.cache_entries_of(id, ITEM_PAGE_ROWS).await?,
        }),
    };
    Ok(Json(ItemPage {
        item,
        checkpoints,
        durable,
        history,
    })
    .into_response())
}

/// The listing filter `p` asks for.
fn items_filter(p: &HashMap<String, String>) -> Result<ItemFilter, ApiError> {
    let status = p
        .get("status")
        .map(|s| ItemStatus::from_str(s).map_err(ApiError::bad_request))
        .transpose()?;
    let non_empty = |name: &str| match p.get(name) {
        Some(v) if v.trim().is_empty() => {
            Err(ApiError::bad_request(format!("{name} must not be empty")))
        }
        v => Ok(v.cloned()),
    };
    let kind = non_empty("kind")?;
    let group_id = non_empty("group")?;
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
        group_id,
        limit,
        after,
        ..ItemFilter::default()
    })
}
