package link

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/meridian-mesh/meridian/edge/llm"
	linkv1 "github.com/meridian-mesh/meridian/proto/link/v1"
	"github.com/meridian-mesh/meridian/shared/telemetry"
	"github.com/quic-go/quic-go"
)

func (t *Transport) acceptLoop(ln *quic.EarlyListener, h Handler) {
	for {
		conn, err := ln.Accept(t.ctx)
		if err != nil {
			return
		}
		go t.serveConn(conn, h)
	}
}

func (t *Transport) serveConn(conn *quic.Conn, h Handler) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		conn.CloseWithError(codeShutdown, "shutting down")
		return
	}
	t.served[conn] = struct{}{}
	t.mu.Unlock()
	// Streams are served by a chain of goroutines (acceptStream), so the
	// link is forgotten when it closes, not when this function returns.
	context.AfterFunc(conn.Context(), func() {
		t.mu.Lock()
		delete(t.served, conn)
		t.mu.Unlock()
	})
	go echo(conn)
	t.acceptStream(conn, h)
}

// acceptStream waits for one stream and serves it on this goroutine,
// handing the wait for the next stream to a new one: the goroutine that
// is already awake runs the request, which saves a wake-up on the path
// to the first byte.
func (t *Transport) acceptStream(conn *quic.Conn, h Handler) {
	str, err := conn.AcceptStream(conn.Context())
	if err != nil {
		return
	}
	go t.acceptStream(conn, h)
	t.serveStream(conn, str, h)
}

// serveStream runs one forwarded request. Its context ends when the
// forwarding side resets the stream (either direction), when the link
// dies, or at the request's deadline.
func (t *Transport) serveStream(conn *quic.Conn, str *quic.Stream, h Handler) {
	m := t.met
	m.open.WithLabelValues("in").Inc()
	outcome := "ok"
	fr := newFrameReader(str, t.cfg.MaxFrameBytes)
	fw := newFrameWriter(str, t.cfg.MaxFrameBytes)
	defer func() {
		m.open.WithLabelValues("in").Dec()
		m.streams.WithLabelValues("in", outcome).Inc()
		m.bytes.WithLabelValues("received").Add(float64(fr.n))
		m.bytes.WithLabelValues("sent").Add(float64(fw.n))
		fr.release()
		fw.release()
	}()
	// A panic in the handler or its stream must not take the node down
	// with every other link stream: it ends this stream alone, with a
	// non-retryable 500 (the same request would panic again elsewhere).
	var (
		reqID     string
		streaming bool // a status frame went out; errors go in the trailer
	)
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		outcome = "panic"
		t.log.Error("link: panic serving a forwarded request", "peer", peerName(conn.ConnectionState().TLS),
			"request_id", reqID, "panic", v, "stack", string(debug.Stack()))
		e := encodeError(&llm.Error{Status: http.StatusInternalServerError, Type: llm.TypeServer, Code: "internal_error",
			Message: "The serving node failed while handling this request."})
		f := &linkv1.Frame{Kind: &linkv1.Frame_Status{Status: &linkv1.Status{Error: e}}}
		if streaming {
			f = &linkv1.Frame{Kind: &linkv1.Frame_Trailer{Trailer: &linkv1.Trailer{Error: e}}}
		}
		if fw.write(f) != nil || fw.flush() != nil {
			str.CancelWrite(codeAborted)
			return
		}
		str.Close()
	}()
	abort := func(why string) {
		outcome = why
		str.CancelRead(codeAborted)
		str.CancelWrite(codeAborted)
	}
	// Mutual TLS has verified the peer by the time stream data is read:
	// 1-RTT data waits for the client's Finished, and 0-RTT data rides a
	// session ticket issued to a verified client. Check anyway.
	peer := peerName(conn.ConnectionState().TLS)
	if peer == "" {
		abort("unauthenticated")
		return
	}

	str.SetReadDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	var f linkv1.Frame
	if err := fr.read(&f); err != nil {
		abort("bad_header")
		return
	}
	hdr := f.GetHeader()
	if hdr == nil {
		abort("bad_header")
		return
	}
	reqID = hdr.RequestId
	str.SetReadDeadline(time.Time{})

	ctx, cancel := context.WithCancel(conn.Context())
	defer cancel()
	// The forwarding side cancels by resetting both directions; its
	// STOP_SENDING cancels the send side's context. The link dying
	// cancels conn's.
	defer context.AfterFunc(str.Context(), cancel)()
	// The request ended with the header (its FIN); stop reading, which
	// also releases a stream whose peer never sent the FIN.
	defer str.CancelRead(codeCanceled)

	fail := func(e *llm.Error, why string) {
		outcome = why
		fw.write(&linkv1.Frame{Kind: &linkv1.Frame_Status{Status: &linkv1.Status{Error: encodeError(e)}}})
		fw.flush()
		str.Close()
	}
	now := t.now()
	sent := time.UnixMilli(hdr.SentUnixMs)
	switch {
	case len(hdr.Id) != 16:
		fail(&llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Message: "forwarded request without a valid link request ID"}, "bad_header")
		return
	case now.Sub(sent) > t.cfg.ReplayWindow || sent.Sub(now) > t.cfg.ReplayWindow:
		// Stale (or from a badly skewed clock): outside the window in
		// which IDs are remembered, so a replay could not be told apart.
		t.log.Warn("link: refused a request outside the replay window", "peer", peer, "request_id", hdr.RequestId, "skew", now.Sub(sent))
		fail(&llm.Error{Status: http.StatusServiceUnavailable, Type: llm.TypeServer, Code: "link_clock_skew",
			Message: "The forwarded request is older than the replay window; check the nodes' clocks.", Retryable: true}, "stale")
		return
	case !t.seen.firstSeen(hdr.Id, now):
		t.log.Warn("link: refused a replayed request", "peer", peer, "request_id", hdr.RequestId)
		fail(&llm.Error{Status: http.StatusConflict, Type: llm.TypeInvalidRequest, Code: "link_duplicate",
			Message: "This forwarded request was already received; it runs only once.", Cause: ErrDuplicate}, "duplicate")
		return
	case int(hdr.Hops) > t.cfg.MaxHops:
		fail(&llm.Error{Status: http.StatusLoopDetected, Type: llm.TypeServer, Code: "hop_limit",
			Message: "This request crossed too many links between Meridian nodes.", Retryable: true, Cause: ErrHopLimit}, "hop_limit")
		return
	}
	req, err := decodeHeader(hdr)
	if err != nil {
		e := llm.AsError(err)
		if !errors.As(err, new(*llm.Error)) {
			e = &llm.Error{Status: http.StatusBadRequest, Type: llm.TypeInvalidRequest, Message: "malformed forwarded request", Cause: err}
		}
		fail(e, "bad_header")
		return
	}
	if hdr.DeadlineUnixMs != 0 {
		var dcancel context.CancelFunc
		ctx, dcancel = context.WithDeadline(ctx, time.UnixMilli(hdr.DeadlineUnixMs))
		defer dcancel()
	}
	ctx = WithHops(ctx, int(hdr.Hops))
	ctx = WithCaller(ctx, Caller{Tenant: hdr.Tenant, Key: hdr.Key, Via: peer})
	ctx = telemetry.WithTraceparent(ctx, hdr.Traceparent)

	start := time.Now()
	resp, err := h(ctx, req)
	if err != nil {
		if ctx.Err() != nil {
			abort("canceled")
			return
		}
		fail(llm.AsError(err), "error")
		return
	}
	status := &linkv1.Status{UpstreamUs: time.Since(start).Microseconds()}
	if resp.Stream == nil {
		body := resp.Body
		if body == nil && resp.Completion != nil {
			if body, err = json.Marshal(resp.Completion); err != nil {
				fail(llm.AsError(err), "error")
				return
			}
		}
		err := fw.write(&linkv1.Frame{Kind: &linkv1.Frame_Status{Status: status}})
		if err == nil {
			err = fw.write(&linkv1.Frame{Kind: &linkv1.Frame_Body{Body: &linkv1.Body{Json: body}}})
		}
		if err == nil {
			err = fw.write(&linkv1.Frame{Kind: &linkv1.Frame_Trailer{Trailer: &linkv1.Trailer{Usage: encodeUsage(resp.Usage)}}})
		}
		if err == nil {
			err = fw.flush()
		}
		if err != nil {
			abort(writeOutcome(ctx))
			return
		}
		str.Close()
		return
	}
	streaming = true
	if why := t.relay(ctx, fw, status, resp.Stream); why != "ok" {
		abort(why)
		return
	}
	str.Close()
}

// relay streams chunks as frames. It flushes the first two chunks at
// once (time to first token) and after that whenever the source has
// nothing more in memory, so a burst costs one write. A write blocks
// while the forwarding side's flow-control window is full: QUIC's flow
// control is the backpressure on the serving edge's upstream.
func (t *Transport) relay(ctx context.Context, fw *frameWriter, status *linkv1.Status, st llm.Stream) string {
	defer st.Close()
	if err := fw.write(&linkv1.Frame{Kind: &linkv1.Frame_Status{Status: status}}); err != nil {
		return writeOutcome(ctx)
	}
	buffered, _ := st.(llm.Buffered)
	chunk := &linkv1.Chunk{}
	frame := &linkv1.Frame{Kind: &linkv1.Frame_Chunk{Chunk: chunk}}
	var buf []byte
	sent := 0
	var serr error
	for {
		c, err := st.Next()
		if err != nil {
			serr = err
			break
		}
		buf = c.AppendJSON(buf[:0])
		chunk.Json, chunk.Typed = buf, c.Raw == nil
		if err := fw.write(frame); err != nil {
			return writeOutcome(ctx)
		}
		sent++
		if sent <= 2 || buffered == nil || buffered.Buffered() == 0 {
			if err := fw.flush(); err != nil {
				return writeOutcome(ctx)
			}
		}
	}
	if ctx.Err() != nil {
		return "canceled"
	}
	tr := &linkv1.Trailer{}
	if u, ok := st.Usage(); ok {
		tr.Usage = encodeUsage(u)
	}
	var e *llm.Error
	switch {
	case errors.Is(serr, io.EOF):
	case errors.Is(serr, llm.ErrStreamCut):
		tr.Cut = true
	case errors.As(serr, &e):
		tr.Error = encodeError(e)
	default:
		t.log.Warn("link: stream failed", "err", serr)
		tr.Error = encodeError(&llm.Error{Status: http.StatusBadGateway, Type: llm.TypeUpstream, Message: "The stream failed on the serving node."})
	}
	if err := fw.write(&linkv1.Frame{Kind: &linkv1.Frame_Trailer{Trailer: tr}}); err != nil {
		return writeOutcome(ctx)
	}
	if err := fw.flush(); err != nil {
		return writeOutcome(ctx)
	}
	return "ok"
}

func writeOutcome(ctx context.Context) string {
	if ctx.Err() != nil {
		return "canceled"
	}
	return "write_error"
}
