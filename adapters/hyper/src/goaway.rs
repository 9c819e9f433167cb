//! HTTP/2 after its graceful GOAWAY: a WINDOW_UPDATE on a stream the server refused is
//! ignored, as RFC 9113 §6.8 says, instead of ending the connection.
//!
//! hyper's graceful shutdown (h2's) sends GOAWAY with the largest stream id and a PING; when
//! the PING's ACK comes back it sends the final GOAWAY, naming the last stream it serves,
//! and ignores the streams the client opens after that. It ignores their HEADERS, DATA and
//! RST_STREAM — but a WINDOW_UPDATE for one (h2 0.4.21) it takes for a frame on a stream
//! that was never opened: a connection error, GOAWAY(PROTOCOL_ERROR), which ends the
//! streams it was still answering. gRPC's C core (Python's, Ruby's, C++'s `grpcio`) sends a
//! WINDOW_UPDATE right after a new stream's HEADERS, and opens streams until it has handled
//! the first GOAWAY; under restarts that lost about one call in 150 restarts
//! (`seed_experiment`'s grpcio cell).
//!
//! [`GoAwayGuard`] sits under hyper on every HTTP/2 connection and drops exactly those
//! frames. It reads the frame headers of both directions — nothing else of the protocol —
//! to know what h2 decided: the PING written after a GOAWAY with the largest stream id is
//! the shutdown's; the client's streams whose HEADERS arrive before that PING's ACK are
//! the ones h2 serves (it processes frames in the order they arrive); a WINDOW_UPDATE for a
//! later stream is dropped. Reads go through a buffer of its own (one more copy of what
//! the client sends): hyper's read cursor lends no view of the bytes it was given.
//!
//! A workaround for h2's bug, reported in `docs/upstream/h2-window-update-after-goaway.md`
//! with a reproduction (`cargo run --example upstream_h2_window_update_after_goaway`).
//! Remove it once the h2 lameduck depends on ignores every frame on a stream above its
//! final GOAWAY: the reproduction then exits 0.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::rt::{Read, ReadBuf, ReadBufCursor, Write};

/// The client's connection preface, which precedes its first frame.
const PREFACE_LEN: usize = 24;
/// An HTTP/2 frame header: length (24 bits), type, flags, stream id (31 bits).
const HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const ACK: u8 = 0x1;
/// The largest stream id: a GOAWAY naming it refuses nothing yet (the graceful first one).
const MAX_STREAM_ID: u32 = 0x7fff_ffff;
/// How much one read takes from the socket at most.
const READ_CHUNK: usize = 8 * 1024;

/// A frame header, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl Header {
    fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_STREAM_ID,
        }
    }
}

/// A byte stream cut into frames: where the current frame's payload ends, a header cut by
/// the end of an input, and the first bytes of a payload when they matter (a GOAWAY's last
/// stream id, a PING's 8 bytes).
#[derive(Debug, Default)]
struct Frames {
    /// A header arriving in pieces, and how much of it is here.
    header: [u8; HEADER_LEN],
    have: usize,
    /// The current frame's type, and how many of its payload bytes are still to come.
    kind: u8,
    left: usize,
    /// How many leading payload bytes to keep, and those kept so far.
    want: usize,
    got: usize,
    payload: [u8; 8],
}

impl Frames {
    /// The frame header at `input[*at..]`, which it moves past: parsed in place when it is
    /// all there (true), else put together across inputs (false); `None` when `input` ends
    /// inside it. The frame's payload comes next.
    #[inline]
    fn header(&mut self, input: &[u8], at: &mut usize) -> Option<(Header, bool)> {
        let rest = &input[*at..];
        if self.have == 0 {
            if let Some(bytes) = rest.first_chunk::<HEADER_LEN>() {
                *at += HEADER_LEN;
                return Some((self.begin(Header::parse(bytes)), true));
            }
        }
        let n = (HEADER_LEN - self.have).min(rest.len());
        self.header[self.have..self.have + n].copy_from_slice(&rest[..n]);
        self.have += n;
        *at += n;
        if self.have < HEADER_LEN {
            return None;
        }
        self.have = 0;
        Some((self.begin(Header::parse(&self.header)), false))
    }

    fn begin(&mut self, header: Header) -> Header {
        self.kind = header.kind;
        self.left = header.len;
        self.want = 0;
        self.got = 0;
        header
    }

    /// Keeps the first `n` payload bytes of the current frame (at most 8).
    fn capture(&mut self, n: usize) {
        self.want = n.min(self.left).min(self.payload.len());
    }

    /// Passes over the current frame's payload in `input[*at..]`; true when the bytes it
    /// was to keep are complete with this input.
    #[inline]
    fn payload(&mut self, input: &[u8], at: &mut usize) -> bool {
        let n = self.left.min(input.len() - *at);
        let mut captured = false;
        if self.got < self.want {
            let k = (self.want - self.got).min(n);
            self.payload[self.got..self.got + k].copy_from_slice(&input[*at..*at + k]);
            self.got += k;
            captured = self.got == self.want;
        }
        self.left -= n;
        *at += n;
        captured
    }
}

/// What the server writes: when its graceful shutdown's PING goes out.
#[derive(Debug, Default)]
struct Outgoing {
    frames: Frames,
    /// A GOAWAY with the largest stream id went out: the next PING is the shutdown's.
    graceful: bool,
    /// The shutdown PING's payload, once written.
    shutdown_ping: Option<[u8; 8]>,
}

impl Outgoing {
    fn observe(&mut self, bytes: &[u8]) {
        let mut at = 0;
        while at < bytes.len() {
            if self.frames.left > 0 {
                if self.frames.payload(bytes, &mut at) {
                    self.captured();
                }
                continue;
            }
            let Some((h, _)) = self.frames.header(bytes, &mut at) else {
                return;
            };
            if h.kind == GOAWAY {
                self.frames.capture(4);
            } else if h.kind == PING && h.flags & ACK == 0 && self.graceful {
                self.frames.capture(8);
            }
        }
    }

    fn captured(&mut self) {
        let payload = self.frames.payload;
        match self.frames.kind {
            GOAWAY => {
                let [a, b, c, d, ..] = payload;
                let last = u32::from_be_bytes([a, b, c, d]) & MAX_STREAM_ID;
                self.graceful = last == MAX_STREAM_ID;
            }
            PING => {
                self.shutdown_ping.get_or_insert(payload);
                self.graceful = false;
            }
            _ => {}
        }
    }
}

/// What the client sends, minus the WINDOW_UPDATEs on streams h2 refused.
#[derive(Debug)]
struct Incoming {
    /// Preface bytes still to pass.
    preface: usize,
    frames: Frames,
    /// The highest stream id the client opened so far (HEADERS).
    highest: u32,
    /// The last stream h2 serves, once the shutdown PING's ACK arrived: the highest opened
    /// before it.
    last: Option<u32>,
    /// The current frame is dropped.
    dropping: bool,
}

impl Default for Incoming {
    fn default() -> Self {
        Incoming {
            preface: PREFACE_LEN,
            frames: Frames::default(),
            highest: 0,
            last: None,
            dropping: false,
        }
    }
}

impl Incoming {
    /// Passes `input` on to `keep` — in as few pieces as it can: the runs between dropped
    /// frames — but for the WINDOW_UPDATEs on streams opened after the shutdown PING's
    /// ACK; a header cut by the end of `input` is held until its rest comes.
    fn filter(
        &mut self,
        input: &[u8],
        shutdown_ping: Option<[u8; 8]>,
        keep: &mut impl FnMut(&[u8]),
    ) {
        // `input[run..at]` is to be handed on.
        let (mut run, mut at) = (0, self.preface.min(input.len()));
        self.preface -= at;
        while at < input.len() {
            if self.frames.left > 0 {
                let from = at;
                let captured = self.frames.payload(input, &mut at);
                if self.dropping {
                    pass(keep, &input[run..from]);
                    run = at;
                }
                if captured && self.last.is_none() && shutdown_ping == Some(self.frames.payload) {
                    self.last = Some(self.highest);
                }
                continue;
            }
            let from = at;
            if self.frames.have > 0 || input.len() - at < HEADER_LEN {
                // A header in pieces is handed on (or not) once whole.
                pass(keep, &input[run..from]);
                run = from;
            }
            let Some((h, in_place)) = self.frames.header(input, &mut at) else {
                run = at;
                break;
            };
            if h.kind == HEADERS {
                self.highest = self.highest.max(h.stream);
            }
            self.dropping = h.kind == WINDOW_UPDATE
                && h.stream != 0
                && self.last.is_some_and(|last| h.stream > last);
            if self.last.is_none() && h.kind == PING && h.flags & ACK != 0 {
                self.frames.capture(8);
            }
            if self.dropping {
                if in_place {
                    pass(keep, &input[run..from]);
                }
                run = at;
            } else if !in_place {
                let header = self.frames.header;
                keep(&header);
                run = at;
            }
        }
        pass(keep, &input[run..]);
    }

    /// The bytes of a header held back, at the end of the input.
    fn held(&mut self) -> &[u8] {
        let have = std::mem::take(&mut self.frames.have);
        &self.frames.header[..have]
    }
}

/// Hands `bytes` on, unless there are none.
#[inline]
fn pass(keep: &mut impl FnMut(&[u8]), bytes: &[u8]) {
    if !bytes.is_empty() {
        keep(bytes);
    }
}

/// An HTTP/2 connection's I/O, under hyper: see the module docs.
pub(crate) struct GoAwayGuard<I> {
    io: I,
    incoming: Incoming,
    outgoing: Outgoing,
    /// What was read from the socket (allocated at the first read).
    buf: Vec<u8>,
    /// Filtered bytes that did not fit into hyper's read cursor, and how many of them were
    /// handed on since.
    pending: Vec<u8>,
    handed: usize,
}

impl<I> GoAwayGuard<I> {
    pub fn new(io: I) -> Self {
        GoAwayGuard {
            io,
            incoming: Incoming::default(),
            outgoing: Outgoing::default(),
            buf: Vec::new(),
            pending: Vec::new(),
            handed: 0,
        }
    }
}

impl<I: Read + Unpin> Read for GoAwayGuard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut cursor: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.handed < this.pending.len() {
                let n = (this.pending.len() - this.handed).min(cursor.remaining());
                cursor.put_slice(&this.pending[this.handed..this.handed + n]);
                this.handed += n;
                if this.handed == this.pending.len() {
                    this.pending.clear();
                    this.handed = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let room = cursor.remaining();
            if room == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.buf.is_empty() {
                this.buf = vec![0; READ_CHUNK];
            }
            let mut raw = ReadBuf::new(&mut this.buf[..room.min(READ_CHUNK)]);
            ready!(Pin::new(&mut this.io).poll_read(cx, raw.unfilled()))?;
            let n = raw.filled().len();
            let mut handed = 0;
            let (pending, incoming) = (&mut this.pending, &mut this.incoming);
            let mut keep = |bytes: &[u8]| {
                let fits = bytes.len().min(cursor.remaining());
                cursor.put_slice(&bytes[..fits]);
                pending.extend_from_slice(&bytes[fits..]);
                handed += bytes.len();
            };
            if n == 0 {
                // The end: a header cut short goes to hyper as it is, which tells.
                keep(incoming.held());
                return Poll::Ready(Ok(()));
            }
            incoming.filter(&this.buf[..n], this.outgoing.shutdown_ping, &mut keep);
            if handed > 0 {
                return Poll::Ready(Ok(()));
            }
            // All of it dropped or held: read on (the read registers the waker when the
            // socket has nothing more).
        }
    }
}

impl<I: Write + Unpin> Write for GoAwayGuard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.outgoing.observe(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for buf in bufs {
            let k = left.min(buf.len());
            this.outgoing.observe(&buf[..k]);
            left -= k;
            if left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn window_update(stream: u32) -> Vec<u8> {
        frame(WINDOW_UPDATE, 0, stream, &1000u32.to_be_bytes())
    }

    const SHUTDOWN_PING: [u8; 8] = *b"shutdown";

    /// What the server writes in a graceful shutdown: GOAWAY(max), PING, then the final
    /// GOAWAY(1).
    fn server_shutdown() -> Vec<u8> {
        [
            frame(0x4, 0, 0, &[]), // SETTINGS
            frame(GOAWAY, 0, 0, &[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
            frame(PING, 0, 0, &SHUTDOWN_PING),
            frame(GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
        ]
        .concat()
    }

    /// The client: preface, stream 1, the ACK, then stream 3 with its WINDOW_UPDATE.
    fn client(ack: &[u8; 8]) -> (Vec<u8>, Vec<u8>) {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let before = [
            preface,
            frame(0x4, 0, 0, &[]),
            frame(HEADERS, 0x4, 1, b"hpack"),
            window_update(1),
            frame(0x0, 0x1, 1, b"request body"),
            window_update(0),
        ]
        .concat();
        let after = [
            frame(PING, ACK, 0, ack),
            frame(HEADERS, 0x4, 3, b"hpack"),
            window_update(3),
            window_update(1), // stream 1 is served: its updates pass
            frame(0x0, 0x1, 3, b"ignored by h2"),
        ]
        .concat();
        (before, after)
    }

    fn filtered(input: &[u8], split: usize, ping: Option<[u8; 8]>) -> Vec<u8> {
        let mut incoming = Incoming::default();
        let mut out = Vec::new();
        for chunk in input.chunks(split) {
            incoming.filter(chunk, ping, &mut |b| out.extend_from_slice(b));
        }
        out.extend_from_slice(incoming.held());
        out
    }

    #[test]
    fn the_shutdown_ping_is_the_one_written_after_the_graceful_goaway() {
        for split in 1..=40 {
            let mut outgoing = Outgoing::default();
            // A keep-alive PING before the shutdown is not it.
            outgoing.observe(&frame(PING, 0, 0, b"keepaliv"));
            for chunk in server_shutdown().chunks(split) {
                outgoing.observe(chunk);
            }
            assert_eq!(outgoing.shutdown_ping, Some(SHUTDOWN_PING), "split {split}");
        }
    }

    #[test]
    fn window_updates_for_streams_opened_after_the_shutdown_ack_are_dropped() {
        let (before, after) = client(&SHUTDOWN_PING);
        let input = [before.clone(), after].concat();
        let expected = [
            before,
            frame(PING, ACK, 0, &SHUTDOWN_PING),
            frame(HEADERS, 0x4, 3, b"hpack"),
            window_update(1),
            frame(0x0, 0x1, 3, b"ignored by h2"),
        ]
        .concat();
        for split in 1..=input.len() {
            assert_eq!(
                filtered(&input, split, Some(SHUTDOWN_PING)),
                expected,
                "split {split}"
            );
        }
    }

    #[test]
    fn nothing_is_dropped_before_the_shutdown_or_for_another_ping() {
        let (before, after) = client(b"keepaliv");
        let input = [before, after].concat();
        for split in [1, 5, 9, 13, input.len()] {
            assert_eq!(filtered(&input, split, Some(SHUTDOWN_PING)), input);
            assert_eq!(filtered(&input, split, None), input);
        }
    }

    /// However the bytes arrive, what is handed on is the same: frames of every kind and
    /// size, the shutdown ACK somewhere among them, cut into reads of every size.
    #[test]
    fn the_output_does_not_depend_on_how_the_input_is_cut() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..200 {
            let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            for _ in 0..next(12) {
                let stream = next(8) as u32;
                input.extend(match next(5) {
                    0 => frame(HEADERS, 0x4, stream, &vec![7; next(40) as usize]),
                    1 => window_update(stream),
                    2 => frame(PING, ACK, 0, &SHUTDOWN_PING),
                    3 => frame(0x0, 0, stream, &vec![9; next(30) as usize]),
                    _ => frame(PING, ACK, 0, b"keepaliv"),
                });
            }
            let whole = filtered(&input, input.len(), Some(SHUTDOWN_PING));
            for split in 1..=20 {
                assert_eq!(filtered(&input, split, Some(SHUTDOWN_PING)), whole);
            }
        }
    }

    /// Whatever a client sends — garbage, lengths up to 16 MB, cut anywhere — nothing
    /// panics, and before the shutdown (or with a PING ACK that is not its) every byte goes
    /// on unchanged; the server side's bytes are only looked at.
    #[test]
    fn any_bytes_pass_unchanged_until_the_shutdown_and_nothing_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..500 {
            let len = (next() % 300) as usize;
            let input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let split = 1 + (next() % 40) as usize;
            assert_eq!(filtered(&input, split, None), input);
            let _ = filtered(&input, split, Some(SHUTDOWN_PING));
            let mut outgoing = Outgoing::default();
            for chunk in input.chunks(split) {
                outgoing.observe(chunk);
            }
        }
    }

    #[test]
    fn a_header_cut_by_the_end_goes_on_as_it_is() {
        let (before, _) = client(&SHUTDOWN_PING);
        let input = [&before[..], &window_update(3)[..5]].concat();
        assert_eq!(filtered(&input, 7, Some(SHUTDOWN_PING)), input);
    }
}
