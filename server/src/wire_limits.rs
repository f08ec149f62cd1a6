//! Limits checked on a request's bytes before prost decodes them.
//!
//! Decoding can cost far more memory than the message's size: an empty
//! `ScheduleTask` action is 4 bytes on the wire and a few hundred in
//! memory, so one 11 MB `CompleteOrchestratorTask` with a million of them
//! took 800 MB before any limit in the engine could look at it. The
//! message size limit does not help; counting does. [`BoundedCodec`] is
//! prost's codec with one step in front of every request decode: a walk of
//! the bytes by the protocol's schema (compiled in by `build.rs`) that
//! counts, without allocating, how many entries each repeated field of
//! each message holds and how many messages the request holds in all, and
//! refuses the request with `INVALID_ARGUMENT` past
//! [`REPEATED_ENTRIES_MAX`] or [`MESSAGES_MAX`]. Responses (what a client
//! of this crate decodes) are not walked. Its encoder reserves a message's
//! whole length before encoding it ([`SizedEncoder`]).

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::LazyLock;

use prost::Message;
use prost::bytes::Buf;
use prost_types::field_descriptor_proto::{Label, Type};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// Most entries one repeated field (or map) of one message may hold:
/// twice the engine's limit of actions per step, so a step somewhat past
/// that limit still reaches the engine, which fails its instance with
/// `TooManyActions` (a refused completion would only be retried by the
/// SDK); no other repeated field of a request legitimately comes near.
pub const REPEATED_ENTRIES_MAX: usize = 2 * basalt_engine::ACTIONS_PER_STEP_MAX;

/// Most messages (at every depth) one request may hold: ten per entry of
/// the largest repeated field allowed.
pub const MESSAGES_MAX: usize = 10 * REPEATED_ENTRIES_MAX;

/// Deepest nesting walked; prost refuses deeper messages itself.
const DEPTH_MAX: usize = 64;

/// A field of the schema, as far as counting needs it.
struct Field {
    repeated: bool,
    /// The field's message type (full name), if it is a message.
    message: Option<String>,
}

/// The protocol's messages by full name (`.OrchestratorResponse`), and
/// which of them are requests (the input types of the service's methods),
/// by their Rust name.
struct Schema {
    messages: HashMap<String, HashMap<u32, Field>>,
    requests: HashMap<String, String>,
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/sidecar_descriptors.bin"));
    // Written by build.rs from the same compile that generated the code:
    // it decodes, or the build is broken.
    let set = prost_types::FileDescriptorSet::decode(&bytes[..]).unwrap_or_default();
    let mut messages = HashMap::new();
    let mut inputs = HashSet::new();
    for file in &set.file {
        let package = match file.package() {
            "" => String::new(),
            p => format!(".{p}"),
        };
        for message in &file.message_type {
            add_message(&mut messages, &package, message);
        }
        for service in &file.service {
            for method in &service.method {
                inputs.insert(method.input_type().to_owned());
            }
        }
    }
    let requests = inputs
        .into_iter()
        .filter(|name| messages.contains_key(name))
        .filter_map(|name| Some((name.rsplit('.').next()?.to_owned(), name)))
        .collect();
    Schema { messages, requests }
});

fn add_message(
    messages: &mut HashMap<String, HashMap<u32, Field>>,
    scope: &str,
    message: &prost_types::DescriptorProto,
) {
    let name = format!("{scope}.{}", message.name());
    let fields = message
        .field
        .iter()
        .map(|f| {
            let field = Field {
                repeated: f.label() == Label::Repeated,
                message: (f.r#type() == Type::Message).then(|| f.type_name().to_owned()),
            };
            (f.number() as u32, field)
        })
        .collect();
    for nested in &message.nested_type {
        add_message(messages, &name, nested);
    }
    messages.insert(name, fields);
}

/// Why a request was refused before decoding.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Walks `bytes` as the request message `rust_name` (the last segment of
/// its Rust type name). Types that are not requests of the service pass.
pub fn check_request(rust_name: &str, bytes: &[u8]) -> Result<(), Refusal> {
    let schema = &*SCHEMA;
    let Some(full_name) = schema.requests.get(rust_name) else {
        return Ok(());
    };
    let mut messages = 0;
    walk(schema, full_name, bytes, 0, &mut messages)
}

fn walk(
    schema: &Schema,
    type_name: &str,
    mut bytes: &[u8],
    depth: usize,
    messages: &mut usize,
) -> Result<(), Refusal> {
    *messages += 1;
    if *messages > MESSAGES_MAX {
        return Err(Refusal(format!(
            "the request holds more than {MESSAGES_MAX} messages (the limit)"
        )));
    }
    if depth > DEPTH_MAX {
        return Err(Refusal(format!(
            "the request nests messages deeper than {DEPTH_MAX}"
        )));
    }
    let Some(fields) = schema.messages.get(type_name) else {
        // A well-known type (a wrapper, a timestamp): small and flat.
        return Ok(());
    };
    let mut counts: HashMap<u32, usize> = HashMap::new();
    while !bytes.is_empty() {
        // Malformed bytes end the walk: prost reports them when it decodes.
        let Ok(key) = prost::encoding::decode_varint(&mut bytes) else {
            return Ok(());
        };
        let number = (key >> 3) as u32;
        let wire_type = key & 7;
        let value = match wire_type {
            0 => {
                let Ok(_) = prost::encoding::decode_varint(&mut bytes) else {
                    return Ok(());
                };
                None
            }
            1 | 5 => {
                let width = if wire_type == 1 { 8 } else { 4 };
                if bytes.len() < width {
                    return Ok(());
                }
                bytes = &bytes[width..];
                None
            }
            2 => {
                let Ok(len) = prost::encoding::decode_varint(&mut bytes) else {
                    return Ok(());
                };
                let Some(value) = usize::try_from(len).ok().and_then(|l| bytes.get(..l)) else {
                    return Ok(());
                };
                bytes = &bytes[value.len()..];
                Some(value)
            }
            _ => return Ok(()),
        };
        let Some(field) = fields.get(&number) else {
            continue;
        };
        if field.repeated {
            let count = counts.entry(number).or_default();
            *count += 1;
            if *count > REPEATED_ENTRIES_MAX {
                return Err(Refusal(format!(
                    "field {number} of {} holds more than {REPEATED_ENTRIES_MAX} entries (the limit)",
                    type_name.trim_start_matches('.')
                )));
            }
        }
        if let (Some(message), Some(value)) = (&field.message, value) {
            walk(schema, message, value, depth + 1, messages)?;
        }
    }
    Ok(())
}

/// Prost's codec, with [`check_request`] before every decode.
#[derive(Debug, Clone)]
pub struct BoundedCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for BoundedCodec<T, U> {
    fn default() -> Self {
        BoundedCodec {
            _types: PhantomData,
        }
    }
}

impl<T, U> Codec for BoundedCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    type Decoder = BoundedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedEncoder { _type: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        BoundedDecoder {
            inner: tonic_prost::ProstCodec::<T, U>::raw_decoder(BufferSettings::default()),
            rust_name: std::any::type_name::<U>()
                .rsplit("::")
                .next()
                .unwrap_or_default(),
        }
    }
}

/// Encodes a message into room reserved for its whole length up front: a
/// long history (megabytes) would otherwise grow the buffer by doubling,
/// copying it each time.
#[derive(Debug)]
pub struct SizedEncoder<T> {
    _type: PhantomData<T>,
}

impl<T: Message> Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        // `encode` would size the message again to check the room.
        item.encode_raw(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Decodes `U` once its bytes passed [`check_request`].
#[derive(Debug)]
pub struct BoundedDecoder<U> {
    inner: ProstDecoder<U>,
    rust_name: &'static str,
}

impl<U: Message + Default> Decoder for BoundedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let refused = |Refusal(why)| Status::invalid_argument(why);
        if buf.chunk().len() == buf.remaining() {
            check_request(self.rust_name, buf.chunk()).map_err(refused)?;
            return self.inner.decode(buf);
        }
        // Not one piece (tonic buffers a message whole, so this is rare):
        // walk a copy, then decode that.
        let bytes = buf.copy_to_bytes(buf.remaining());
        check_request(self.rust_name, &bytes).map_err(refused)?;
        U::decode(bytes)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{OrchestratorAction, OrchestratorResponse, ScheduleTaskAction};

    fn step(actions: usize) -> Vec<u8> {
        OrchestratorResponse {
            instance_id: "i".into(),
            actions: (0..actions)
                .map(|i| OrchestratorAction {
                    id: i as i32,
                    orchestrator_action_type: Some(
                        crate::proto::orchestrator_action::OrchestratorActionType::ScheduleTask(
                            ScheduleTaskAction::default(),
                        ),
                    ),
                })
                .collect(),
            ..OrchestratorResponse::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn every_request_of_the_service_is_known() {
        // Each method's input type resolves to a message the walk knows,
        // so no request type slips past by name.
        assert!(SCHEMA.requests.contains_key("OrchestratorResponse"));
        assert!(SCHEMA.requests.contains_key("EntityBatchResult"));
        assert!(SCHEMA.requests.len() >= 20, "{}", SCHEMA.requests.len());
    }

    #[test]
    fn a_step_at_the_limit_passes_and_one_past_it_is_refused() {
        assert_eq!(
            check_request("OrchestratorResponse", &step(REPEATED_ENTRIES_MAX)),
            Ok(())
        );
        let refused = check_request("OrchestratorResponse", &step(REPEATED_ENTRIES_MAX + 1))
            .expect_err("past the limit");
        assert!(refused.0.contains("OrchestratorResponse"), "{refused:?}");
        // Responses are not walked.
        assert_eq!(check_request("OrchestratorRequest", &step(20_000)), Ok(()));
    }
}
