package api

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/edge/usage"
	usagev1 "github.com/meridian-mesh/meridian/proto/usage/v1"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/usagewire"
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
	l := usage.Labels{Tenant: "none", Model: LabelUnknown}
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
func (c *Config) Forwarded(ctx context.Context, cl *gateway.Client, via string, req *llm.Request) (*llm.Response, error) {
	start := time.Now()
	snap := c.Gateway.SnapshotFor(ctx)
	res, err := c.Gateway.DoIn(ctx, snap, req)
	if err != nil || c.Usage == nil {
		if err != nil {
			return nil, err
		}
		return res.Response, nil
	}
	s := &served{requestID: req.ID, tenant: cl.Tenant, key: cl.Key, model: req.Model, via: via,
		route: res.Route, status: 200, start: start}
	resp := res.Response
	if resp.Stream == nil {
		s.tokensIn, s.tokensOut = tokens(resp.Usage)
		c.record(snap.Table(), s)
		return resp, nil
	}
	s.stream = true
	s.tokensIn = uint64(len(req.Body) / 4)
	resp.Stream = &recordedStream{Stream: resp.Stream, done: func(u llm.Usage, ok bool, chunks int, clean bool) {
		if ok {
			s.tokensIn, s.tokensOut = tokens(u)
		} else {
			s.tokensOut = uint64(chunks)
		}
		s.interrupted = !clean
		c.record(snap.Table(), s)
	}}
	return resp, nil
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
