//! Most chunks of an answer differ only in their delta's one text field: the rest (id,
//! `created`, model, fixed fields and keys) is serialised once per answer into a frame, and each
//! text delta after the first is written as the frame's head, its field and the frame's tail.
//! Escaping the rest for every token was a measurable share of a streamed event's CPU
//! (docs/performance.md, 2026-12-03, late).

use super::{data_line, Chunk, Delta, Envelope};
use crate::json::write_python;

/// A chunk with an empty delta, cut where the delta's field goes: `data: {"id": …, "delta": {`
/// and `}, "logprobs": null, "finish_reason": null}]}` plus the blank line. Cut from the same
/// serialisation as every other chunk, so the two cannot drift apart.
pub(super) struct DeltaFrame {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl DeltaFrame {
    pub(super) fn of(envelope: &Envelope) -> Option<Self> {
        let mut line = Vec::new();
        data_line(&mut line, &Chunk::of(envelope, Delta::default(), None));
        // The last `"delta": {}`: a JSON string cannot hold it unescaped, and the delta comes
        // after the id and the model.
        const EMPTY: &[u8] = b"\"delta\": {}";
        let at = line.windows(EMPTY.len()).rposition(|w| w == EMPTY)? + EMPTY.len() - 1;
        let tail = line.split_off(at);
        Some(DeltaFrame { head: line, tail })
    }

    /// A chunk whose delta is the one field `field` with the text `text`.
    pub(super) fn write(&self, out: &mut Vec<u8>, field: TextField, text: &str) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(field.key());
        // Escaping a string into memory cannot fail.
        let _ = write_python(out, text);
        out.extend_from_slice(&self.tail);
    }
}

/// The delta fields that carry text alone.
#[derive(Clone, Copy)]
pub(super) enum TextField {
    Content,
    Reasoning,
}

impl TextField {
    /// The field's name as the frame writes it, up to its value.
    fn key(self) -> &'static [u8] {
        match self {
            TextField::Content => b"\"content\": ",
            TextField::Reasoning => b"\"reasoning_content\": ",
        }
    }

    pub(super) fn delta(self, text: &str) -> Delta<'_> {
        match self {
            TextField::Content => Delta { content: Some(text), ..Delta::default() },
            TextField::Reasoning => Delta { reasoning_content: Some(text), ..Delta::default() },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sluice_sdk::PipeEvent;

    use super::super::{Form, StreamEncoder};
    use super::*;

    /// What the general way writes for a delta of one text field after the first.
    fn general(envelope: &Envelope, field: TextField, text: &str) -> Vec<u8> {
        let mut encoder = StreamEncoder::new(envelope.clone(), Form { events: true, usage: true });
        encoder.role_sent = true;
        let mut out = Vec::new();
        encoder.delta(&mut out, field.delta(text), None);
        out
    }

    #[test]
    fn a_text_delta_through_the_frame_is_the_general_chunk_byte_for_byte() {
        let envelope = Envelope { id: r#"a "delta": {}\-1"#.into(), created: 17, model: "m\u{e9}\"delta\": {}".into() };
        for field in [TextField::Content, TextField::Reasoning] {
            let mut encoder = StreamEncoder::new(envelope.clone(), Form { events: true, usage: true });
            for text in ["first", "h\u{e9}llo \u{1F600}", "\"delta\": {}\n\u{0}\u{2028}", ""] {
                let mut out = Vec::new();
                let was_sent = encoder.role_sent;
                encoder.encode(
                    match field {
                        TextField::Content => PipeEvent::text(text),
                        TextField::Reasoning => PipeEvent::Reasoning(text.into()),
                    },
                    &mut out,
                );
                if was_sent {
                    assert_eq!(
                        String::from_utf8_lossy(&out),
                        String::from_utf8_lossy(&general(&envelope, field, text))
                    );
                } else {
                    assert!(String::from_utf8_lossy(&out).contains(r#""role": "assistant""#));
                }
            }
            assert!(encoder.frame.is_some());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(sluice_sdk::fuzz::cases()))]
        #[test]
        fn any_text_and_model_give_the_same_chunk_through_the_frame(
            model in ".{0,24}", text in ".{0,40}", created in proptest::prelude::any::<u64>(),
        ) {
            let envelope = Envelope { id: format!("{model}-1"), created, model };
            let frame = DeltaFrame::of(&envelope).unwrap();
            for field in [TextField::Content, TextField::Reasoning] {
                let mut out = Vec::new();
                frame.write(&mut out, field, &text);
                proptest::prop_assert_eq!(out, general(&envelope, field, &text));
            }
        }
    }
}
