//! The conformance suite every leasehold [`Store`] backend must pass, written once.
//!
//! Each case is a `pub async fn` of a fresh, empty `Arc<dyn Store>`; it passes time to the
//! store explicitly (every operation takes `now`), so no case sleeps and none depends on the
//! backend's clock. A backend runs the whole suite with one line in an integration test:
//!
//! ```ignore
//! async fn fresh() -> (std::sync::Arc<dyn leasehold_core::Store>, tempfile::TempDir) {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = leasehold_sqlite::SqliteStore::open(dir.path().join("db")).await.unwrap();
//!     (std::sync::Arc::new(store), dir)
//! }
//! leasehold_conformance::conformance_tests!(fresh());
//! ```
//!
//! which expands to one `#[tokio::test]` per case, named for the behaviour it proves, each on
//! the store its own call of the factory made.
//!
//! # Layout
//! - [`conformance_tests!`] (this file): the one list of cases, expanded to tests; and
//!   [`Fixture`], what a factory may return (a store, or a store with a guard such as its
//!   temporary directory).
//! - [`cases`]: the cases, one module per area of the protocol (lease lifecycle, fencing,
//!   retries, acquisition, `recover_mine`, the reaper, reads, the worker registry, input
//!   validation).
//! - [`support`]: the shared base time, builders, assertions (`LeaseLost` and "nothing
//!   changed") and scripted [`LivenessCheck`](leasehold_core::LivenessCheck)s; usable by a
//!   backend's own tests too.
//! - [`model`]: an in-memory model of the lease protocol, a strategy of random operation
//!   sequences, and the runner that drives a store and the model side by side checking
//!   invariants 1–4 after every step (a backend's property test is a few lines around it).
//! - `tests/mutants.rs`: the suite's own check: it must fail against stores broken on
//!   purpose (a zombie allowed to complete, a reaper that asks nobody).

pub mod cases;
pub mod model;
pub mod support;

use std::sync::Arc;

pub use leasehold_core::Store;

/// What a conformance factory produces: a fresh store, plus anything that must outlive the
/// test (a temporary directory, a database container handle).
pub trait Fixture: Send + 'static {
    /// The store under test.
    fn store(&self) -> Arc<dyn Store>;
}

impl Fixture for Arc<dyn Store> {
    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(self)
    }
}

/// The store, and a guard dropped only when the test ends.
impl<G: Send + 'static> Fixture for (Arc<dyn Store>, G) {
    fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.0)
    }
}

/// How long one case may run before it counts as hung (a deadlock in the backend, e.g. a
/// liveness check that calls back into the store during a sweep).
pub const CASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Expands to one `#[tokio::test]` per conformance case. The argument is an expression
/// evaluated afresh in every test, whose `.await` yields a [`Fixture`] (an `Arc<dyn Store>`
/// on its own empty database, or such a store with a guard). The calling crate needs `tokio`
/// with the `macros` and `rt` features.
///
/// This macro is the one list of cases: a new case in [`cases`] is added here too.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!(@cases $factory;
            // lease lifecycle
            lease_lifecycle_acquire_renew_complete,
            renew_owner_extends_every_lease_of_that_owner_only,
            an_expired_lease_not_yet_taken_can_still_be_renewed,
            ping_answers_on_a_fresh_store,
            // fencing
            zombie_cannot_complete_after_takeover,
            stale_epoch_after_reap_and_takeover_cannot_write,
            stale_epoch_after_recover_mine_and_reacquisition_cannot_write,
            stale_lease_of_a_requeued_pending_item_cannot_write,
            wrong_owner_with_the_current_epoch_cannot_write,
            current_owner_with_another_epoch_cannot_write,
            finished_or_released_lease_refuses_further_writes,
            // attempts and retries
            retryable_failures_dead_letter_when_attempts_are_spent,
            retried_item_is_not_acquired_before_its_backoff,
            permanent_failure_dead_letters_at_once,
            release_does_not_count_an_attempt,
            releases_past_the_limit_count_attempts_and_dead_letter_when_spent,
            cancel_pending_item_cancels_it,
            cancel_finished_item_is_invalid_state,
            cancel_unknown_item_is_not_found,
            // acquisition
            acquire_orders_by_priority_then_run_at_then_id,
            delayed_item_is_not_acquired_early,
            kind_filter_acquires_only_listed_kinds,
            group_filter_acquires_only_that_group,
            batch_acquire_returns_distinct_items_up_to_the_limit,
            concurrent_batch_acquires_never_hand_out_an_item_twice,
            // recover_mine
            recover_mine_requeues_the_owners_items_and_dead_letters_spent_ones,
            recover_mine_fences_out_the_previous_incarnation,
            recover_node_takes_back_only_that_incarnations_items,
            recover_node_leaves_items_whose_own_heartbeat_is_fresh,
            // the reaper
            reap_leaves_an_unexpired_lease_alone,
            reap_keeps_an_expired_lease_whose_owner_is_alive,
            reap_requeues_an_expired_lease_whose_owner_is_dead,
            reap_dead_letters_an_expired_lease_whose_attempts_are_spent,
            reap_takes_items_past_the_stale_limit_even_if_the_owner_is_alive,
            reap_dry_run_reports_the_same_and_changes_nothing,
            reap_honours_the_batch_limit,
            reap_continues_past_a_full_batch_of_live_owners,
            reap_max_attempts_override_dead_letters_earlier_never_later,
            reap_renewal_between_scan_and_write_wins,
            reap_with_registry_liveness_spares_live_nodes_and_requeues_dead_ones,
            // reads
            lease_status_reports_expiry_and_remaining_time,
            lease_status_of_unknown_item_is_not_found,
            leases_of_owner_lists_only_that_owners_in_progress_items,
            counts_by_status_cover_every_item,
            list_filters_by_status_kind_group_and_owner,
            list_pages_by_id_with_limit_and_after,
            checkpoints_are_saved_and_listed_oldest_first,
            progress_report_is_stored_and_fenced,
            item_timeout_is_stored_and_returned_by_reads_and_acquisition,
            // the worker registry
            node_heartbeat_inserts_then_replaces_the_row,
            node_heartbeat_never_goes_back_to_an_older_or_stopped_incarnation,
            nodes_list_returns_every_node_by_id,
            node_stop_stops_only_the_matching_incarnation,
            node_register_refuses_a_live_incarnation_and_claims_a_dead_or_stopped_one,
            node_register_incarnation_grows_when_the_clock_steps_back,
            concurrent_node_registrations_of_one_id_let_exactly_one_through,
            registry_liveness_alive_for_a_fresh_heartbeat_of_the_same_incarnation,
            registry_liveness_dead_for_a_missed_heartbeat,
            registry_liveness_dead_for_a_stopped_node,
            registry_liveness_dead_for_another_incarnation,
            registry_liveness_dead_without_a_known_node,
            cleanup_removes_only_the_named_unchanged_rows_and_dry_run_removes_nothing,
            cleanup_removes_old_finished_items_with_their_checkpoints_only,
            // the operators' reads
            depth_by_kind_counts_open_items_per_kind,
            finished_since_counts_per_bucket,
            recently_finished_lists_newest_first_and_refuses_bad_input,
            // pipelines
            follow_ups_are_enqueued_in_the_completions_commit,
            zombie_completion_with_follow_ups_creates_nothing,
            invalid_follow_up_refuses_the_completion_and_writes_nothing,
            unique_key_returns_the_open_items_id_and_is_freed_when_it_finishes,
            unique_within_returns_an_item_completed_inside_the_window,
            concurrent_enqueues_of_one_key_create_one_item,
            // dependencies
            dependant_of_many_is_released_by_the_last_completion,
            failed_dependency_cancels_its_dependants_transitively,
            retried_dependant_waits_again_for_its_unfinished_dependency,
            cancelled_dependency_cancels_its_dependants,
            unknown_or_forward_dependency_is_refused_and_nothing_is_written,
            // schedules
            schedule_upsert_keeps_the_next_run_unless_the_expression_changed,
            schedule_claim_lets_one_claimer_win_each_tick,
            concurrent_schedule_claims_enqueue_each_tick_once,
            schedule_claim_enqueues_every_tick_and_refuses_bad_input,
            // attempt history and operators' actions
            history_records_each_ended_attempt_with_how_it_ended,
            history_lease_lost_record_is_written_by_the_taker_not_the_zombie,
            history_keeps_the_newest_attempts_per_item,
            retry_returns_failed_and_cancelled_items_to_pending_with_a_fresh_budget,
            actions_refuse_a_wrong_state_or_bad_selector_and_change_nothing,
            cancel_in_progress_marks_it_and_the_holder_learns_at_renewal,
            cancel_mark_is_finished_by_whoever_ends_the_attempt,
            pause_skips_a_kind_on_every_acquisition_until_resumed,
            delete_removes_finished_items_with_their_history,
            actions_by_filter_report_how_many_and_dry_runs_change_nothing,
            // the emergency operations
            reap_by_registry_spares_live_nodes_and_dry_run_changes_nothing,
            reap_by_registry_dead_letters_at_the_reaper_limit_with_its_reason,
            release_dead_nodes_takes_only_dead_incarnations_items_and_dry_run_changes_nothing,
            // the decision step
            park_then_decide_resumes_the_item_with_the_answer,
            park_is_fenced_and_refuses_an_invalid_question,
            decide_refuses_an_item_not_parked_and_an_answer_not_allowed,
            cancel_ends_an_awaiting_item_and_a_later_decision_is_refused,
            // invalid input
            enqueue_refuses_invalid_items_and_writes_nothing,
            acquire_refuses_invalid_requests_and_writes_nothing,
            reap_refuses_invalid_requests_and_writes_nothing,
            list_refuses_a_zero_limit,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $case() {
                let fixture = $factory.await;
                let store = $crate::Fixture::store(&fixture);
                ::tokio::time::timeout($crate::CASE_TIMEOUT, $crate::cases::$case(store))
                    .await
                    .expect(concat!(stringify!($case), " timed out: a hung store call?"));
                drop(fixture);
            }
        )*
    };
}
