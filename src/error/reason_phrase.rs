//! An error's message as its HTTP reason phrase: Open WebUI shows only the phrase of a failed
//! inlet or chat and logs only the phrase of a refused valves update (it reads the body too
//! late). actix-http takes a phrase that lives for the whole process, so phrases are interned,
//! a bounded number per room: beyond that, a phrase that says what kind of error it is.

use std::collections::HashMap;
use std::sync::Mutex;

use sluice_sdk::ErrorKind;

use super::ApiError;

/// Distinct phrases kept in each [`Room`] (at most 120 bytes each).
const MAX_PHRASES: usize = 256;

/// Longest phrase, in bytes.
const MAX_LEN: usize = 120;

/// A run of letters, digits, `_` and `-` with a piece (between `_` and `-`) at least this long
/// that mixes letters and digits is an identifier (`req_` and 32 hex digits, a UUID, an
/// organisation id), shown as `...`; model names (`gpt-4.1-mini-2025-04-14`) have short pieces.
const ID_PIECE: usize = 12;

/// The phrase for `error`, or `None` for the standard one.
pub(super) fn of(error: &ApiError) -> Option<&'static str> {
    let room = Room::of(error);
    match interned(&printable(&error.to_string()), room) {
        Interned::Phrase(phrase) => Some(phrase),
        Interned::Empty => None,
        Interned::Full => room.when_full(error),
    }
}

/// Which set a phrase is kept in. The phrases Open WebUI shows or logs keep rooms of their own,
/// so a caller filling one with errors that quote what it sent (missing pipelines, unknown
/// valves, unknown actions) cannot take the others': a caller naming 600 missing pipelines
/// filled the one set there was, and a real upstream refusal then went out as a bare
/// `502 Bad Gateway` (found by a red team).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Room {
    /// A pipeline's errors: Open WebUI shows the phrase of a failed inlet or chat to the user.
    Pipeline,
    /// A refused valves update: Open WebUI logs only its phrase.
    Valves,
    Other,
}

impl Room {
    fn of(error: &ApiError) -> Self {
        match error {
            // What the caller named does not exist: its own words, as for a missing pipeline.
            ApiError::Pipeline(e) if e.kind == ErrorKind::NotFound => Room::Other,
            ApiError::Pipeline(_) => Room::Pipeline,
            ApiError::InvalidValves(_) | ApiError::PinnedValves(_) => Room::Valves,
            _ => Room::Other,
        }
    }

    /// The phrase once the room is full: what kind of error it is, without the words of the
    /// message (the body still has them all).
    fn when_full(self, error: &ApiError) -> Option<&'static str> {
        match (self, error) {
            (Room::Valves, _) => Some("Valves refused; the reasons are in the body"),
            (Room::Pipeline, ApiError::Pipeline(e)) => Some(match e.kind {
                ErrorKind::BadRequest => "The request was refused; the reason is in the body",
                ErrorKind::Rejected => "Refused by a filter; the reason is in the body",
                ErrorKind::NotFound => "Not found",
                ErrorKind::RateLimited => "Rate limited upstream; try again in a moment",
                ErrorKind::Upstream => "The upstream answered with an error; more in the body",
                ErrorKind::Unavailable => "The upstream cannot be reached; try again in a moment",
                ErrorKind::Timeout => "The upstream did not answer in time",
                ErrorKind::NotConfigured => "The pipeline is not configured yet; more in the body",
                ErrorKind::Internal => "The pipeline failed; more in the body",
            }),
            _ => None,
        }
    }
}

/// `message` as a phrase may be: visible ASCII (line breaks as spaces, anything else as `?`),
/// identifiers elided, at most [`MAX_LEN`] bytes, trimmed.
fn printable(message: &str) -> String {
    let mut phrase = String::with_capacity(message.len().min(MAX_LEN));
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        if is_word(c) {
            let mut word = String::from(c);
            while let Some(&next) = chars.peek().filter(|n| is_word(**n)) {
                word.push(next);
                chars.next();
            }
            phrase.push_str(if is_id(&word) { "..." } else { &word });
        } else {
            phrase.push(match c {
                ' '..='~' => c,
                '\t' | '\n' | '\r' => ' ',
                _ => '?',
            });
        }
        if phrase.len() >= MAX_LEN {
            break;
        }
    }
    // Cut at a byte that is ASCII, so at a char boundary.
    phrase.truncate(MAX_LEN);
    phrase.trim().to_string()
}

fn is_id(word: &str) -> bool {
    // A UUID's pieces are short, and may be digits only.
    let uuid = word.len() == 36 && word.split('-').map(str::len).eq([8, 4, 4, 4, 12]);
    uuid || word.split(['_', '-']).any(|piece| {
        piece.len() >= ID_PIECE
            && piece.bytes().any(|b| b.is_ascii_digit())
            && piece.bytes().any(|b| b.is_ascii_alphabetic())
    })
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

enum Interned {
    Phrase(&'static str),
    Empty,
    Full,
}

fn interned(phrase: &str, room: Room) -> Interned {
    type Phrases = Mutex<Option<HashMap<String, &'static str>>>;
    static OF_PIPELINES: Phrases = Mutex::new(None);
    static OF_VALVES: Phrases = Mutex::new(None);
    static OTHERS: Phrases = Mutex::new(None);
    if phrase.is_empty() {
        return Interned::Empty;
    }
    let phrases = match room {
        Room::Pipeline => &OF_PIPELINES,
        Room::Valves => &OF_VALVES,
        Room::Other => &OTHERS,
    };
    // A panic while holding it left a map, not broken invariants.
    let mut guard = phrases.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(phrase) {
        return Interned::Phrase(p);
    }
    if map.len() >= MAX_PHRASES {
        return Interned::Full;
    }
    let leaked: &'static str = Box::leak(phrase.to_string().into_boxed_str());
    map.insert(phrase.to_string(), leaked);
    Interned::Phrase(leaked)
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use actix_web::ResponseError;
    use sluice_sdk::{FieldError, PipelineError};

    fn phrase(e: ApiError) -> Option<&'static str> {
        e.error_response().head().reason
    }

    #[test]
    fn phrases_are_ascii_short_and_interned() {
        assert_eq!(printable("Blocked by policy: too long"), "Blocked by policy: too long");
        assert_eq!(printable("caf\u{e9}\r\nnext "), "caf?  next");
        assert_eq!(printable(&"x".repeat(500)).len(), MAX_LEN);
        assert_eq!(printable(&"x ".repeat(500)).len(), MAX_LEN - 1, "trimmed");
        assert_eq!(printable("\u{e9}".repeat(200).as_str()).len(), MAX_LEN);
        assert!(matches!(interned("", Room::Other), Interned::Empty));
    }

    /// Each upstream error carried its own request id, and 256 ordinary errors took every
    /// phrase (found by a red team): identifiers are elided, so repeats of one error share one.
    #[test]
    fn identifiers_are_elided() {
        assert_eq!(
            printable("OpenAI: boom (server_error; request req_8f14e45fceea167a5a36dedd4bea2543)"),
            "OpenAI: boom (server_error; request ...)"
        );
        assert_eq!(printable("id 123e4567-e89b-12d3-a456-426614174000 gone"), "id ... gone");
        // Words, model names, numbers and short ids are kept.
        let kept = "OpenAI: gpt-4.1-mini-2025-04-14 rate limit: Limit 30000, Used 29881 (req_e2e429)";
        assert_eq!(printable(kept), "OpenAI: gpt-4.1-mini-2025-04-14 rate limit: Limit 30000, Used 29881 (req_e2e429)");
        assert_eq!(printable("unsupported_parameter_in_this_request"), "unsupported_parameter_in_this_request");
    }

    /// One test, as the rooms are the process's: filling one room, then another.
    #[test]
    fn callers_cannot_use_up_the_phrases_of_pipelines_or_valves_errors() {
        let once = interned("same phrase", Room::Pipeline);
        let again = interned("same phrase", Room::Pipeline);
        match (once, again) {
            (Interned::Phrase(a), Interned::Phrase(b)) => assert_eq!(a.as_ptr(), b.as_ptr(), "one allocation"),
            _ => panic!("not interned"),
        }
        for n in 0..2 * MAX_PHRASES {
            phrase(ApiError::pipeline_not_found(&format!("nope{n}")));
            phrase(ApiError::Pipeline(PipelineError::new(ErrorKind::NotFound, format!("No action named fill{n}"))));
        }
        assert_eq!(phrase(ApiError::pipeline_not_found("one-more")), None, "the callers' room is full");
        let quota = || ApiError::Pipeline(PipelineError::upstream("OpenAI: your quota is exhausted"));
        assert_eq!(phrase(quota()), Some("OpenAI: your quota is exhausted"));
        let valves = || ApiError::InvalidValves(vec![FieldError::new("TIMEOUT", "must be an integer")]);
        assert_eq!(phrase(valves()), Some("Invalid valves: TIMEOUT: must be an integer"));

        // Unknown valve names, each its own phrase, fill the valves room.
        for n in 0..2 * MAX_PHRASES {
            phrase(ApiError::InvalidValves(vec![FieldError::new(format!("X{n}"), "unknown valve")]));
        }
        assert_eq!(phrase(valves()), Some("Invalid valves: TIMEOUT: must be an integer"), "kept");
        let other = ApiError::InvalidValves(vec![FieldError::new("TIMEOUT", "must be a number")]);
        assert_eq!(phrase(other), Some("Valves refused; the reasons are in the body"));
        assert_eq!(phrase(quota()), Some("OpenAI: your quota is exhausted"));

        // Upstream errors that differ in their numbers fill the pipelines' room: then each says
        // its kind.
        for n in 0..2 * MAX_PHRASES {
            let limited = format!("OpenAI: Rate limit reached: Used {n}");
            phrase(ApiError::Pipeline(PipelineError::new(ErrorKind::RateLimited, limited)));
        }
        assert_eq!(phrase(quota()), Some("OpenAI: your quota is exhausted"), "kept");
        let late = ApiError::Pipeline(PipelineError::new(ErrorKind::RateLimited, "OpenAI: Rate limit: Used 99999"));
        assert_eq!(phrase(late), Some("Rate limited upstream; try again in a moment"));
        let late = ApiError::Pipeline(PipelineError::upstream("OpenAI: answered text/html"));
        assert_eq!(phrase(late), Some("The upstream answered with an error; more in the body"));
    }
}
