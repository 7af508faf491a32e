//! The decision step: a holder parks its item with a question and the answers it accepts
//! ([`Store::item_park`](crate::Store::item_park)); someone answers
//! ([`Store::item_decide`](crate::Store::item_decide)) and the item goes back to pending with
//! the answer.
//!
//! Both backends keep the [`Decision`] as JSON beside the item and use [`Decision::decide`] and
//! [`Decision::merge_into`] to answer it, so the rules (which answers count, where the answer
//! lands in the input) are written once.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;

/// The key under which a decided item's input (when it is a JSON object) carries its
/// decision: `{"decision": {"question": …, "answer": …}}`.
pub const INPUT_KEY: &str = "decision";

/// What a holder asks when it parks its item: a question and the answers it accepts.
///
/// ```
/// use leasehold_core::DecisionRequest;
/// let ask = DecisionRequest::new("No contact found for acme.com: what now?", ["skip", "retry"]);
/// assert!(ask.validate().is_ok());
/// assert!(DecisionRequest::new("?", Vec::<String>::new()).validate().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRequest {
    /// The question, for a person.
    pub question: String,
    /// The answers accepted, exactly as they must be given (at least one, none empty, no
    /// duplicates).
    pub answers: Vec<String>,
}

impl DecisionRequest {
    /// A question with the answers it accepts.
    pub fn new<I, S>(question: impl Into<String>, answers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        DecisionRequest {
            question: question.into(),
            answers: answers.into_iter().map(Into::into).collect(),
        }
    }

    /// Refuses an empty question, no answers, an empty answer or the same answer twice.
    pub fn validate(&self) -> Result<(), String> {
        if self.question.trim().is_empty() {
            return Err("the question must not be empty".into());
        }
        if self.answers.is_empty() {
            return Err("a decision needs at least one allowed answer".into());
        }
        for (i, a) in self.answers.iter().enumerate() {
            if a.trim().is_empty() {
                return Err("an allowed answer must not be empty".into());
            }
            if self.answers[..i].contains(a) {
                return Err(format!("the answer {a:?} is allowed twice"));
            }
        }
        Ok(())
    }
}

/// A parked item's question, and once decided its answer. Stored with the item
/// ([`Item::decision`](crate::Item::decision)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The question.
    pub question: String,
    /// The answers accepted.
    pub answers: Vec<String>,
    /// When the holder parked the item.
    pub asked_at: Timestamp,
    /// The answer given, once decided.
    #[serde(default)]
    pub answer: Option<String>,
    /// When it was decided.
    #[serde(default)]
    pub decided_at: Option<Timestamp>,
}

impl Decision {
    /// An open decision asked at `now`.
    pub fn ask(request: &DecisionRequest, now: Timestamp) -> Self {
        Decision {
            question: request.question.clone(),
            answers: request.answers.clone(),
            asked_at: now,
            answer: None,
            decided_at: None,
        }
    }

    /// This decision answered with `answer` at `now`; an answer that is not one of
    /// [`answers`](Self::answers) is refused with a message naming it and the allowed ones.
    pub fn decide(&self, answer: &str, now: Timestamp) -> Result<Decision, String> {
        if !self.answers.iter().any(|a| a == answer) {
            return Err(format!(
                "answer {answer:?} is not allowed; the question {:?} accepts {}",
                self.question,
                self.answers
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(Decision {
            answer: Some(answer.to_owned()),
            decided_at: Some(now),
            ..self.clone()
        })
    }

    /// `input` with this decision's question and answer under [`INPUT_KEY`], when `input` is
    /// a JSON object (any earlier decision there is replaced); any other input is returned
    /// unchanged (the handler reads the answer from [`Item::decision`](crate::Item::decision)).
    pub fn merge_into(&self, input: &Value) -> Value {
        let mut input = input.clone();
        if let Value::Object(map) = &mut input {
            map.insert(
                INPUT_KEY.to_owned(),
                serde_json::json!({ "question": self.question, "answer": self.answer }),
            );
        }
        input
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_answer_not_allowed_is_refused_naming_it_and_the_allowed_ones() {
        let d = Decision::ask(&DecisionRequest::new("go?", ["yes", "no"]), Timestamp(1));
        let err = d.decide("maybe", Timestamp(2)).unwrap_err();
        assert!(
            err.contains("\"maybe\"") && err.contains("\"yes\", \"no\""),
            "{err}"
        );
        let done = d.decide("no", Timestamp(2)).expect("allowed");
        assert_eq!(done.answer.as_deref(), Some("no"));
        assert_eq!(
            done.merge_into(&json!({"lead": 7})),
            json!({"lead": 7, "decision": {"question": "go?", "answer": "no"}})
        );
        assert_eq!(done.merge_into(&json!([1])), json!([1]));
    }

    #[test]
    fn requests_without_answers_or_with_duplicates_are_refused() {
        assert!(DecisionRequest::new(" ", ["a"]).validate().is_err());
        assert!(DecisionRequest::new("q", ["a", ""]).validate().is_err());
        assert!(DecisionRequest::new("q", ["a", "a"]).validate().is_err());
    }
}
