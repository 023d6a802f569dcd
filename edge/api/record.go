package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/usage"
	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/telemetry"
	"github.com/meridian-mesh/meridian/shared/usagewire"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// served is what a usage record says of one request.
type served struct {
	requestID, tenant, key, model, via string
	route                              gateway.Route
	tokensIn, tokensOut                uint64
	status                             int
	start                              time.Time
	stream, interrupted                bool
	// cached: the answer came from the edge cache, and is priced at
	// the cached rate of priceRoute, the target that produced it.
	cached     bool
	priceRoute gateway.Route
	// batch: a batch line or async request, priced at the batch price.
	batch bool
}

// record hands one usage record to the recorder. Only the node that
// served a request records it: a request served by a peer is recorded
// there (the caller checks).
func (c *Config) record(tab *table.Compiled, s *served) {
	if c.Usage == nil {
		return
	}
	// The recorder encodes rec before Record returns: it stays on the
	// stack.
	rec := usagev1.Record{
		RequestId: s.requestID, Tenant: s.tenant, Key: s.key, Model: s.model,
		Target: s.route.Target, TargetKind: s.route.Kind, Node: c.Node, Region: c.Region, Via: s.via,
		TokensIn: s.tokensIn, TokensOut: s.tokensOut, Status: uint32(s.status),
		LatencyUs: uint64(max(time.Since(s.start), 0).Microseconds()), UnixMs: s.start.UnixMilli(),
		Stream: s.stream, Interrupted: s.interrupted, Revision: tab.Revision(),
	}
	switch {
	case s.cached:
		rec.Cached = true
		if p, ok := price(tab, s.model, &s.priceRoute); ok {
			// Table.Price.Cached, for prompt and completion alike; unset
			// means a hit is free.
			rec.CostNanoUsd = usagewire.CostNanoUSD(s.tokensIn, s.tokensOut, table.Price{Input: p.Cached, Output: p.Cached})
		}
	default:
		if p, ok := price(tab, s.model, &s.route); ok {
			pr := *p
			if s.batch {
				pr = pr.ForBatch() // unset batch prices are the normal ones
			}
			rec.CostNanoUsd = usagewire.CostNanoUSD(s.tokensIn, s.tokensOut, pr)
		}
	}
	l := usage.Labels{Tenant: "none", Model: LabelUnknown, Kind: "none", Region: c.Region}
	switch k := s.route.Kind; {
	case s.cached:
		l.Kind = "cache"
	case k == "local" || k == "peer" || k == "provider":
		l.Kind = k
	}
	if _, ok := tab.Tenant(s.tenant); ok {
		l.Tenant = s.tenant
	}
	if _, ok := tab.Model(s.model); ok {
		l.Model = s.model
	} else if _, ok := tab.Route(s.model); ok {
		l.Model = s.model
	}
	c.Usage.Record(&rec, l)
}

// price is the table's price for the target that served a request for
// model, as the router prices it (table.Compiled.PriceFor: by model ID,
// else by the upstream name): a provider's; a local engine's under the
// table's provider of kind local. Local targets are free unless priced.
func price(tab *table.Compiled, model string, r *gateway.Route) (*table.Price, bool) {
	switch r.Kind {
	case "provider":
		return tab.PriceFor(r.Provider, model, r.UpstreamModel)
	case "local":
		for i := range tab.Table().Providers {
			if p := &tab.Table().Providers[i]; p.Kind == table.KindLocal {
				return tab.PriceFor(p.ID, model, r.UpstreamModel)
			}
		}
	}
	return nil, false
}

// Forwarded serves a request a peer forwarded here and records its
// usage under the tenant and key the peer authenticated (cl), with via
// naming the peer. Only a request this node answers is recorded: one
// that fails here goes back to the peer, which may try another target
// and records the request itself. cl must be the Client in ctx.
//
// Each forwarded request gets its log line here too, with the request
// ID the forwarding edge logged it under and via naming that edge, so
// the two lines of a hop join by request_id; a stream's line is written
// when it ends, with its usage.
func (c *Config) Forwarded(ctx context.Context, cl *gateway.Client, via string, req *llm.Request) (*llm.Response, error) {
	f := &forwarded{c: c, cl: cl, via: via, req: req, start: time.Now()}
	if c.Tracer != nil {
		ctx, f.span = c.startForwarded(ctx, via, req)
	}
	f.ctx = ctx
	snap := c.Gateway.SnapshotFor(ctx)
	f.tab = snap.Table()
	res, err := c.Gateway.DoIn(ctx, snap, req)
	f.res = res
	if err != nil {
		f.done(llm.Usage{}, false, 0, err)
		return nil, err
	}
	resp := res.Response
	if resp.Stream == nil {
		f.done(resp.Usage, true, 0, nil)
		return resp, nil
	}
	resp.Stream = &recordedStream{Stream: resp.Stream, done: func(u llm.Usage, ok bool, chunks int, clean bool) {
		var err error
		if !clean {
			err = llm.ErrStreamCut
		}
		f.stream = true
		f.done(u, ok, chunks, err)
	}}
	return resp, nil
}

// forwarded is one request a peer forwarded here, until it ends.
type forwarded struct {
	c      *Config
	ctx    context.Context
	cl     *gateway.Client
	via    string
	req    *llm.Request
	start  time.Time
	tab    *table.Compiled
	res    *gateway.Result
	span   trace.Span
	stream bool
}

// done records, logs and ends the span of a forwarded request: answered
// with usage u (ok when the answer reported one; chunks counts a
// stream's chunks when it did not), or failed with err.
func (f *forwarded) done(u llm.Usage, ok bool, chunks int, err error) {
	c := f.c
	status := "200"
	route := f.res.Route
	switch {
	case err != nil && f.stream:
		status = "stream_error"
	case err != nil && f.ctx.Err() != nil:
		status = "499"
	case err != nil:
		status = strconv.Itoa(llm.AsError(err).Status)
	}
	s := &served{requestID: f.req.ID, tenant: f.cl.Tenant, key: f.cl.Key, model: f.req.Model, via: f.via,
		route: route, status: 200, start: f.start, stream: f.stream, interrupted: f.stream && err != nil}
	switch {
	case ok:
		s.tokensIn, s.tokensOut = tokens(u)
	case f.stream:
		s.tokensIn, s.tokensOut = uint64(len(f.req.Body)/4), uint64(chunks)
	}
	if c.Usage != nil && (err == nil || f.stream) {
		c.record(f.tab, s)
	}
	if f.span != nil {
		f.span.SetAttributes(telemetry.MeridianStatus.String(status), telemetry.MeridianTenant.String(f.cl.Tenant))
		if route.Target != "" {
			f.span.SetAttributes(telemetry.MeridianTarget.String(route.Target), telemetry.MeridianTargetKind.String(route.Kind),
				telemetry.GenAIResponseModel.String(route.UpstreamModel))
		}
		if ok || f.stream {
			f.span.SetAttributes(telemetry.GenAIInputTokens.Int64(int64(s.tokensIn)), telemetry.GenAIOutputTokens.Int64(int64(s.tokensOut)))
		}
		if err != nil {
			e := llm.AsError(err)
			f.span.SetAttributes(telemetry.ErrorType.String(e.Type))
			f.span.SetStatus(codes.Error, e.Message)
		}
		f.span.End()
	}
	log := c.logger()
	if !log.Enabled(f.ctx, slog.LevelInfo) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", f.req.ID),
		slog.String("via", f.via),
		slog.String("model", f.req.Model),
		slog.String("target", route.Target),
		slog.String("kind", route.Kind),
		slog.String("tenant", f.cl.Tenant),
		slog.String("key", f.cl.Key),
		slog.String("status", status),
		slog.Int64("duration_us", time.Since(f.start).Microseconds()),
	}
	if ok || f.stream {
		attrs = append(attrs, slog.Uint64("tokens_in", s.tokensIn), slog.Uint64("tokens_out", s.tokensOut))
	}
	if id := telemetry.TraceID(f.ctx); id != "" {
		attrs = append(attrs, slog.String("trace_id", id))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	log.LogAttrs(f.ctx, slog.LevelInfo, "request", attrs...)
}

func tokens(u llm.Usage) (in, out uint64) {
	return uint64(max(u.PromptTokens, 0)), uint64(max(u.CompletionTokens, 0))
}

// recordedStream calls done once, when the stream is closed, with its
// usage (or how many chunks went out) and whether it ended cleanly.
type recordedStream struct {
	llm.Stream
	chunks int
	clean  bool
	once   sync.Once
	done   func(u llm.Usage, ok bool, chunks int, clean bool)
}

func (s *recordedStream) Next() (*llm.Chunk, error) {
	c, err := s.Stream.Next()
	if err == nil {
		s.chunks++
	} else if errors.Is(err, io.EOF) {
		s.clean = true
	}
	return c, err
}

// Buffered passes the inner stream's, so relays coalesce as before.
func (s *recordedStream) Buffered() int {
	if b, ok := s.Stream.(llm.Buffered); ok {
		return b.Buffered()
	}
	return 0
}

func (s *recordedStream) Close() error {
	err := s.Stream.Close()
	s.once.Do(func() {
		u, ok := s.Stream.Usage()
		s.done(u, ok, s.chunks, s.clean)
	})
	return err
}
