//! The orchestrator work item's wire form, with its past events either
//! decoded or already encoded.
//!
//! Every step of an orchestration hands the worker its whole history (the
//! SDKs ask for it), so a server that converts and encodes the history
//! each time spends time proportional to the history on every step, and a
//! long orchestration costs quadratic time. The sidecar keeps each long
//! history's encoded bytes between steps ([`crate::history_cache`]) and
//! sends them as they are. prost cannot carry pre-encoded bytes in a
//! generated message, so `OrchestratorRequest` is this hand-written type
//! (the build maps the protocol's `OrchestratorRequest` here): the same
//! fields on the wire, with `pastEvents` as a [`PastEvents`]. It writes
//! `pastEvents` (field 3) after the other fields rather than between 2 and
//! 4 as prost would; protobuf parsers take fields in any order.

use std::collections::HashMap;

use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::proto;

/// The field number of `OrchestratorRequest.pastEvents`.
pub const PAST_EVENTS_TAG: u32 = 3;

/// Every field of `OrchestratorRequest` but `pastEvents`, as prost derives
/// them from the protocol.
#[derive(Clone, PartialEq, Message)]
pub struct RequestHead {
    /// The orchestration instance.
    #[prost(string, tag = "1")]
    pub instance_id: String,
    /// The current generation's execution id.
    #[prost(message, optional, tag = "2")]
    pub execution_id: Option<String>,
    /// The events of this step.
    #[prost(message, repeated, tag = "4")]
    pub new_events: Vec<proto::HistoryEvent>,
    /// Entity parameters (unused by Basalt).
    #[prost(message, optional, tag = "5")]
    pub entity_parameters: Option<proto::OrchestratorEntityParameters>,
    /// The worker must fetch the history with `StreamInstanceHistory`.
    #[prost(bool, tag = "6")]
    pub requires_history_streaming: bool,
    /// Free-form properties.
    #[prost(map = "string, message", tag = "7")]
    pub properties: HashMap<String, prost_types::Value>,
    /// Tracing.
    #[prost(message, optional, tag = "8")]
    pub orchestration_trace_context: Option<proto::OrchestrationTraceContext>,
}

/// Encoded history events, each as a whole `pastEvents` field (key,
/// length, message), in pieces shared with the cache (cloning is cheap).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedEvents {
    pieces: Vec<Bytes>,
    len: usize,
    count: usize,
}

impl EncodedEvents {
    /// Appends `piece`, which holds `count` whole fields.
    pub fn push(&mut self, piece: Bytes, count: usize) {
        if !piece.is_empty() {
            self.len += piece.len();
            self.count += count;
            self.pieces.push(piece);
        }
    }

    /// How many events.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Encoded length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no event is here.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many pieces the bytes are in.
    pub fn pieces(&self) -> usize {
        self.pieces.len()
    }

    /// The same bytes in one piece (the cache compacts with it).
    pub fn compacted(&self) -> EncodedEvents {
        let mut whole = Vec::with_capacity(self.len);
        for piece in &self.pieces {
            whole.extend_from_slice(piece);
        }
        EncodedEvents {
            pieces: vec![Bytes::from(whole)],
            len: self.len,
            count: self.count,
        }
    }

    /// Appends `event` encoded as a `pastEvents` field to `out`.
    pub fn encode_event(event: &proto::HistoryEvent, out: &mut Vec<u8>) {
        prost::encoding::message::encode(PAST_EVENTS_TAG, event, out);
    }
}

/// `OrchestratorRequest.pastEvents`: decoded (what a client reads, or a
/// short history the server converts each time) or already encoded.
#[derive(Clone, Debug, PartialEq)]
pub enum PastEvents {
    /// Events as messages.
    Decoded(Vec<proto::HistoryEvent>),
    /// Events as bytes.
    Encoded(EncodedEvents),
}

impl Default for PastEvents {
    fn default() -> Self {
        PastEvents::Decoded(Vec::new())
    }
}

impl PastEvents {
    /// The events as messages (decodes encoded ones).
    pub fn to_vec(&self) -> Result<Vec<proto::HistoryEvent>, DecodeError> {
        match self {
            PastEvents::Decoded(events) => Ok(events.clone()),
            PastEvents::Encoded(encoded) => {
                let mut request = OrchestratorRequest::default();
                for piece in &encoded.pieces {
                    request.merge(piece.clone())?;
                }
                // Merging always decodes.
                match request.past_events {
                    PastEvents::Decoded(events) => Ok(events),
                    PastEvents::Encoded(_) => Ok(Vec::new()),
                }
            }
        }
    }

    /// How many events.
    pub fn len(&self) -> usize {
        match self {
            PastEvents::Decoded(events) => events.len(),
            PastEvents::Encoded(encoded) => encoded.count(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Their encoded length as `pastEvents` fields, in bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            PastEvents::Decoded(events) => {
                prost::encoding::message::encoded_len_repeated(PAST_EVENTS_TAG, events)
            }
            PastEvents::Encoded(encoded) => encoded.len(),
        }
    }

    /// The decoded events; empty for encoded ones (only a server holds
    /// those, and it never reads them back).
    pub fn decoded(&self) -> &[proto::HistoryEvent] {
        match self {
            PastEvents::Decoded(events) => events,
            PastEvents::Encoded(_) => &[],
        }
    }
}

/// The protocol's `OrchestratorRequest`: [`RequestHead`] plus the past
/// events, decoded or encoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrchestratorRequest {
    /// Every other field.
    pub head: RequestHead,
    /// `pastEvents`.
    pub past_events: PastEvents,
}

impl Message for OrchestratorRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.head.encode_raw(buf);
        match &self.past_events {
            PastEvents::Decoded(events) => {
                for event in events {
                    prost::encoding::message::encode(PAST_EVENTS_TAG, event, buf);
                }
            }
            PastEvents::Encoded(encoded) => {
                for piece in &encoded.pieces {
                    buf.put_slice(piece);
                }
            }
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != PAST_EVENTS_TAG {
            return self.head.merge_field(tag, wire_type, buf, ctx);
        }
        if let PastEvents::Encoded(_) = self.past_events {
            self.past_events = PastEvents::Decoded(Vec::new());
        }
        match &mut self.past_events {
            PastEvents::Decoded(events) => {
                prost::encoding::message::merge_repeated(wire_type, events, buf, ctx)
            }
            PastEvents::Encoded(_) => Ok(()),
        }
    }

    fn encoded_len(&self) -> usize {
        self.head.encoded_len() + self.past_events.encoded_len()
    }

    fn clear(&mut self) {
        self.head.clear();
        self.past_events = PastEvents::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::history_event::EventType;

    fn event(id: i32, name: &str) -> proto::HistoryEvent {
        proto::HistoryEvent {
            event_id: id,
            timestamp: None,
            event_type: Some(EventType::TaskScheduled(proto::TaskScheduledEvent {
                name: name.into(),
                ..Default::default()
            })),
        }
    }

    fn request(past: PastEvents) -> OrchestratorRequest {
        OrchestratorRequest {
            head: RequestHead {
                instance_id: "i".into(),
                execution_id: Some("e".into()),
                new_events: vec![event(9, "new")],
                ..Default::default()
            },
            past_events: past,
        }
    }

    #[test]
    fn encoded_past_events_decode_as_the_decoded_ones_encode() {
        let past: Vec<_> = (0..5).map(|i| event(i, "step")).collect();
        let mut encoded = EncodedEvents::default();
        for pair in past.chunks(2) {
            let mut piece = Vec::new();
            for e in pair {
                EncodedEvents::encode_event(e, &mut piece);
            }
            encoded.push(Bytes::from(piece), pair.len());
        }
        assert_eq!(encoded.pieces(), 3);
        let with_bytes = request(PastEvents::Encoded(encoded.clone())).encode_to_vec();
        let with_messages = request(PastEvents::Decoded(past.clone())).encode_to_vec();
        // The kept bytes are the events as this type encodes them.
        assert_eq!(with_bytes, with_messages);
        // A prost-derived reader of the protocol's message (as generated
        // code reads it) sees the same request.
        #[derive(Clone, PartialEq, Message)]
        struct Generated {
            #[prost(string, tag = "1")]
            instance_id: String,
            #[prost(message, optional, tag = "2")]
            execution_id: Option<String>,
            #[prost(message, repeated, tag = "3")]
            past_events: Vec<proto::HistoryEvent>,
            #[prost(message, repeated, tag = "4")]
            new_events: Vec<proto::HistoryEvent>,
        }
        let generated = Generated::decode(with_bytes.as_slice()).expect("decodes");
        assert_eq!(
            generated,
            Generated {
                instance_id: "i".into(),
                execution_id: Some("e".into()),
                past_events: past.clone(),
                new_events: vec![event(9, "new")],
            }
        );
        // And prost's own encoding of it reads back here as the same.
        let from_prost =
            OrchestratorRequest::decode(generated.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(from_prost, request(PastEvents::Decoded(past.clone())));
        assert_eq!(
            request(PastEvents::Encoded(encoded.clone())).encoded_len(),
            with_bytes.len()
        );
        let decoded = OrchestratorRequest::decode(with_bytes.as_slice()).expect("decodes");
        assert_eq!(decoded, request(PastEvents::Decoded(past.clone())));
        assert_eq!(encoded.to_vec_for_test(), past);
        assert_eq!(encoded.compacted().pieces(), 1);
        assert_eq!(encoded.compacted().to_vec_for_test(), past);
    }

    impl EncodedEvents {
        fn to_vec_for_test(&self) -> Vec<proto::HistoryEvent> {
            PastEvents::Encoded(self.clone()).to_vec().expect("decodes")
        }
    }
}
