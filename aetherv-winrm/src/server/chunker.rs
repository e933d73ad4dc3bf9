//! Sans-IO: how much buffered output fits one ReceiveResponse.
//!
//! The sizes are measured on the envelope writer itself (a template response with the longest
//! possible `CommandState` and the closing `End` streams), so the budget accounts exactly for
//! the envelope, the per-`Stream` markup and base64's growth.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::envelope::{
    self, CommandState, ReceiveOutput, Response, Stream, StreamChunk, WsmanFault,
};

/// Output waiting to be delivered, and the exit code once the command finished.
#[derive(Debug, Default)]
pub(crate) struct PendingOutput {
    /// Pieces in arrival order.
    pub pieces: VecDeque<(Stream, Bytes)>,
    /// Total bytes in `pieces`.
    pub bytes: usize,
    /// The exit code, once the command finished (everything it wrote precedes it).
    pub exit: Option<i64>,
}

impl PendingOutput {
    /// Appends a piece of output.
    pub fn push(&mut self, stream: Stream, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.bytes += data.len();
        self.pieces.push_back((stream, data));
    }

    /// Whether all output was delivered and the command finished.
    pub fn is_done(&self) -> bool {
        self.exit.is_some() && self.pieces.is_empty()
    }

    /// Takes as much output as fits an envelope of `limit` bytes for `command_id`, with the
    /// command state: `Done` with the exit code (and `End` streams) once everything was taken
    /// from a finished command, `Running` otherwise.
    ///
    /// Fails with the `MaxEnvelopeSize` fault when output is waiting but not one byte of it
    /// fits.
    pub fn take(
        &mut self,
        limit: usize,
        command_id: &str,
    ) -> Result<ReceiveOutput, Box<WsmanFault>> {
        let sizes = Sizes::measure(command_id, self.exit.is_some());
        let mut chunks: Vec<StreamChunk> = Vec::new();
        // Envelope bytes used by everything except the base64 of the last chunk.
        let mut used = sizes.envelope;
        while let Some((stream, data)) = self.pieces.front_mut() {
            let continues = chunks.last().is_some_and(|c| c.stream == *stream);
            if !continues {
                if let Some(last) = chunks.last() {
                    used += base64_len(last.data.len());
                }
                if used + sizes.per_chunk + 4 > limit {
                    break;
                }
                used += sizes.per_chunk;
                chunks.push(StreamChunk {
                    stream: *stream,
                    command_id: Some(command_id.to_owned()),
                    data: Vec::new(),
                    end: false,
                });
            }
            let Some(current) = chunks.last_mut() else {
                break;
            };
            let capacity = limit.saturating_sub(used) / 4 * 3;
            let room = capacity.saturating_sub(current.data.len());
            if room == 0 {
                break;
            }
            let n = room.min(data.len());
            current.data.extend_from_slice(&data.split_to(n));
            self.bytes -= n;
            if data.is_empty() {
                self.pieces.pop_front();
            }
        }
        chunks.retain(|c| !c.data.is_empty());
        if chunks.is_empty() && !self.pieces.is_empty() {
            return Err(Box::new(envelope_too_small(limit)));
        }
        let done = self.is_done();
        if done {
            for stream in [Stream::Stdout, Stream::Stderr] {
                chunks.push(StreamChunk {
                    stream,
                    command_id: Some(command_id.to_owned()),
                    data: Vec::new(),
                    end: true,
                });
            }
        }
        Ok(ReceiveOutput {
            chunks,
            state: Some(CommandState {
                command_id: Some(command_id.to_owned()),
                done,
                exit_code: if done { self.exit } else { None },
            }),
        })
    }
}

/// The size of base64 text for `n` bytes.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// The fault Windows sends when the response cannot fit `MaxEnvelopeSize`.
fn envelope_too_small(limit: usize) -> WsmanFault {
    WsmanFault::new(
        "s:Sender",
        Some("w:EncodingLimit"),
        "The WS-Management service cannot process the request because the envelope size in the request is too small.",
    )
    .with_detail(
        WsmanFault::MAX_ENVELOPE_SIZE_EXCEEDED,
        format!(
            "The response that the WS-Management service computed exceeds the maximum envelope size that is allowed ({limit} bytes)."
        ),
    )
}

/// Envelope sizes measured on the writer.
struct Sizes {
    /// A ReceiveResponse with no data: with the longest `Done` state and both `End` streams
    /// when the command may finish in this response, with the `Running` state otherwise.
    envelope: usize,
    /// One more (empty) `Stream` element for this command.
    per_chunk: usize,
}

impl Sizes {
    fn measure(command_id: &str, may_finish: bool) -> Self {
        let stream = |stream, end| StreamChunk {
            stream,
            command_id: Some(command_id.to_owned()),
            data: Vec::new(),
            end,
        };
        let mut template = ReceiveOutput {
            chunks: Vec::new(),
            state: Some(CommandState {
                command_id: Some(command_id.to_owned()),
                done: may_finish,
                exit_code: may_finish.then_some(i64::MIN),
            }),
        };
        if may_finish {
            template.chunks = vec![stream(Stream::Stdout, true), stream(Stream::Stderr, true)];
        }
        let id = uuid::Uuid::nil();
        let envelope =
            envelope::build_response(id, id, &Response::Received(template.clone())).len();
        template.chunks.push(stream(Stream::Stdout, false));
        let with_one = envelope::build_response(id, id, &Response::Received(template)).len();
        Self {
            envelope,
            per_chunk: with_one.saturating_sub(envelope),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const ID: &str = "9C4A1B7E-0D3F-4E55-8A2B-6F1C3D5E7A90";

    fn pending(pieces: &[(Stream, &[u8])], exit: Option<i64>) -> PendingOutput {
        let mut p = PendingOutput::default();
        for (s, d) in pieces {
            p.push(*s, Bytes::copy_from_slice(d));
        }
        p.exit = exit;
        p
    }

    fn size_of(output: &ReceiveOutput) -> usize {
        let id = uuid::Uuid::new_v4();
        envelope::build_response(id, id, &Response::Received(output.clone())).len()
    }

    #[test]
    fn everything_fits_and_finishes() {
        let mut p = pending(
            &[
                (Stream::Stdout, b"one "),
                (Stream::Stdout, b"two"),
                (Stream::Stderr, b"err"),
                (Stream::Stdout, b"three"),
            ],
            Some(3),
        );
        let out = p.take(153_600, ID).unwrap();
        assert!(out.done());
        assert_eq!(out.exit_code(), Some(3));
        let data: Vec<(Stream, &[u8], bool)> = out
            .chunks
            .iter()
            .map(|c| (c.stream, c.data.as_slice(), c.end))
            .collect();
        assert_eq!(
            data,
            vec![
                (Stream::Stdout, &b"one two"[..], false),
                (Stream::Stderr, &b"err"[..], false),
                (Stream::Stdout, &b"three"[..], false),
                (Stream::Stdout, &b""[..], true),
                (Stream::Stderr, &b""[..], true),
            ]
        );
        assert_eq!(p.bytes, 0);
    }

    #[test]
    fn large_output_is_split_exactly_to_the_limit() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        for exit_known in [false, true] {
            // While the command runs nothing is reserved for the Done state; once it finished,
            // every response reserves room for it (the state and the two End streams).
            let slack = if exit_known { 400 } else { 128 };
            for limit in [8192usize, 10_000, 153_600, 512_000] {
                let mut p = pending(
                    &[(Stream::Stdout, &data), (Stream::Stderr, b"tail")],
                    exit_known.then_some(0),
                );
                let mut collected = Vec::new();
                let mut receives = 0;
                loop {
                    let out = p.take(limit, ID).unwrap();
                    receives += 1;
                    let size = size_of(&out);
                    assert!(size <= limit, "{size} > {limit}");
                    out.append_stream(Stream::Stdout, &mut collected);
                    if out.done() {
                        break;
                    }
                    if p.pieces.is_empty() {
                        p.exit = Some(0);
                    } else {
                        assert!(
                            size + slack > limit,
                            "envelope {size} not filled up to {limit}"
                        );
                    }
                }
                assert_eq!(collected, data);
                assert!(receives > 1_000_000 / limit);
            }
        }
    }

    #[test]
    fn running_without_output_and_too_small_envelopes() {
        let mut p = PendingOutput::default();
        let out = p.take(8192, ID).unwrap();
        assert!(out.chunks.is_empty());
        assert!(!out.done());
        let mut p = pending(&[(Stream::Stdout, b"x")], None);
        let err = p.take(500, ID).unwrap_err();
        assert_eq!(err.wsman_code, Some(WsmanFault::MAX_ENVELOPE_SIZE_EXCEEDED));
        assert_eq!(p.bytes, 1);
    }
}
