//! The write endpoints: an operator's retry, cancel, delete and decision on one item, pause
//! and resume of a kind. Each is one store call at the dashboard's clock; the store refuses a wrong state
//! (`409`, with its message naming the state) or bad input (`400`) and then changes nothing.
//!
//! Every write takes a JSON body (`{}` when it has nothing to say) sent as
//! `Content-Type: application/json`. A cross-site form can send no such request without a CORS
//! preflight, which the dashboard never grants, so a page on another origin cannot make a
//! visitor's browser act on a dashboard served without a token on loopback. With a token
//! configured, the writes sit behind the same bearer check as the reads (see `auth`).

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use leasehold_core::{
    ActionReport, ItemId, ItemSelector, RetryRequest, Store, StoreResult, Timestamp,
};

use crate::api::{params, ApiError, Params};
use crate::AppState;

/// `POST /api/items/{id}/retry`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryBody {
    /// A new retry budget; the item's own when absent.
    #[serde(default)]
    max_attempts: Option<u32>,
}

/// The body of the writes that take no arguments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmptyBody {}

/// `POST /api/items/{id}/decide`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecideBody {
    /// One of the answers the item's question accepts.
    answer: String,
}

/// What pause and resume answer.
#[derive(Debug, Serialize)]
struct KindState {
    /// The kind.
    kind: String,
    /// Whether it is paused now.
    paused: bool,
    /// Whether this call changed that (false: it was so already).
    changed: bool,
}

/// The body — a JSON object — as a `T`, or a `400` naming what is wrong with it (missing or
/// wrong content type, bad JSON, not an object, an unknown field, a wrong type).
fn body<T: Body>(body: Result<Json<Value>, JsonRejection>) -> Result<T, ApiError> {
    let refuse = |why: String| {
        ApiError::bad_request(format!("bad request body ({why}); expected {}", T::SHAPE))
    };
    let Json(value) = body.map_err(|e| refuse(e.body_text()))?;
    // A derived struct would also take an array of its fields in order: only an object is
    // what the API documents.
    if !value.is_object() {
        return Err(refuse("not a JSON object".into()));
    }
    serde_json::from_value(value).map_err(|e| refuse(e.to_string()))
}

/// A write's body, and its shape in words for the error that refuses a bad one.
trait Body: DeserializeOwned {
    const SHAPE: &'static str;
}

impl Body for RetryBody {
    const SHAPE: &'static str = r#"{} or {"max_attempts": N}"#;
}

impl Body for EmptyBody {
    const SHAPE: &'static str = "{}";
}

impl Body for DecideBody {
    const SHAPE: &'static str = r#"{"answer": "<one of the question's answers>"}"#;
}

/// A write's path target and body, checked in the order their refusals are reported: no query
/// parameters, then the target (`item_id` or `kind_name` of the path), then the body.
fn checked<P, T: Body>(
    query: Params,
    target: Result<P, ApiError>,
    req: Result<Json<Value>, JsonRejection>,
) -> Result<(P, T), ApiError> {
    params(query, &[])?;
    let target = target?;
    Ok((target, body(req)?))
}

fn item_id(raw: &str) -> Result<ItemId, ApiError> {
    ItemId::from_str(raw).map_err(|e| ApiError::bad_request(format!("id: {e}")))
}

fn kind_name(raw: &str) -> Result<String, ApiError> {
    if raw.trim().is_empty() {
        return Err(ApiError::bad_request("kind must not be empty"));
    }
    Ok(raw.to_string())
}

/// `POST /api/items/{id}/retry` with `{}` or `{"max_attempts": N}`: a failed or cancelled
/// item back to pending. Answers the store's [`ActionReport`].
pub(crate) async fn retry(
    State(app): State<AppState>,
    Path(raw): Path<String>,
    query: Params,
    req: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (id, req): (_, RetryBody) = checked(query, item_id(&raw), req)?;
    let report = app
        .store
        .items_retry(
            &RetryRequest {
                target: ItemSelector::Ids(vec![id]),
                max_attempts: req.max_attempts,
                dry_run: false,
            },
            app.cfg.clock.now(),
        )
        .await?;
    tracing::info!(item = %id, "dashboard: retry");
    Ok(Json(report).into_response())
}

/// `POST /api/items/{id}/cancel` with `{}`: a pending, blocked or awaiting item cancelled, an
/// in-progress one marked for cancellation. Answers the store's [`ActionReport`].
pub(crate) async fn cancel(
    State(app): State<AppState>,
    Path(raw): Path<String>,
    query: Params,
    req: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    on_one_item(
        &app,
        &raw,
        query,
        req,
        "cancel",
        |store, target, now| async move { store.items_cancel(&target, false, now).await },
    )
    .await
}

/// `POST /api/items/{id}/delete` with `{}`: a finished item (completed, failed or cancelled)
/// removed with its checkpoints and attempt history. Answers the store's [`ActionReport`].
pub(crate) async fn delete(
    State(app): State<AppState>,
    Path(raw): Path<String>,
    query: Params,
    req: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    on_one_item(
        &app,
        &raw,
        query,
        req,
        "delete",
        |store, target, _| async move { store.items_delete(&target, false).await },
    )
    .await
}

/// An action that takes `{}` and applies to the one item of the path: checks the request,
/// runs `action` on that item at the dashboard's clock, logs it, answers its report.
async fn on_one_item<F, Fut>(
    app: &AppState,
    raw: &str,
    query: Params,
    req: Result<Json<Value>, JsonRejection>,
    name: &str,
    action: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Arc<dyn Store>, ItemSelector, Timestamp) -> Fut,
    Fut: Future<Output = StoreResult<ActionReport>>,
{
    let (id, EmptyBody {}) = checked(query, item_id(raw), req)?;
    let report = action(
        app.store.clone(),
        ItemSelector::Ids(vec![id]),
        app.cfg.clock.now(),
    )
    .await?;
    tracing::info!(item = %id, "dashboard: {name}");
    Ok(Json(report).into_response())
}

/// `POST /api/items/{id}/decide` with `{"answer": A}`: an awaiting item resumed with the
/// answer. Answers the item as resumed.
pub(crate) async fn decide(
    State(app): State<AppState>,
    Path(raw): Path<String>,
    query: Params,
    req: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (id, req): (_, DecideBody) = checked(query, item_id(&raw), req)?;
    let item = app
        .store
        .item_decide(id, &req.answer, app.cfg.clock.now())
        .await?;
    tracing::info!(item = %id, answer = %req.answer, "dashboard: decide");
    Ok(Json(item).into_response())
}

/// `POST /api/kinds/{kind}/pause` with `{}`: no node of the store takes the kind until it is
/// resumed.
pub(crate) async fn pause(
    State(app): State<AppState>,
    Path(raw): Path<String>,
    query: Params,
    req: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (kind, EmptyBody {}) = checked(query, kind_name(&raw), req)?;
    let changed = app.store.kind_pause(&kind, app.cfg.clock.now()).await?;
    tracing::info!(%kind, changed, "dashboard: pause");
    Ok(Json(KindState {
        kind,
        paused: true,
        changed,
    })
    .into_response())
}

/// `POST /api/kinds/{kind}/resume` with `{}`: nodes take the kind again.
pub(crate) async fn resume(
    State(app): State<AppState>,
    Path(raw): Path<String>,
    query: Params,
    req: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (kind, EmptyBody {}) = checked(query, kind_name(&raw), req)?;
    let changed = app.store.kind_resume(&kind).await?;
    tracing::info!(%kind, changed, "dashboard: resume");
    Ok(Json(KindState {
        kind,
        paused: false,
        changed,
    })
    .into_response())
}
