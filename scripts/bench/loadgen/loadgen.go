// Package loadgen drives HTTP load for benchmarks: an open loop at a fixed
// rate, a closed loop at a fixed concurrency, and streaming runs that time
// the first token. It records every latency sample and computes
// percentiles exactly, never from histograms.
//
// It shares small machines with the system it measures, so it stays lean:
// request bodies are reused, samples go into slices allocated before the
// run, and one transport keeps connections alive across requests. Every
// run is bounded both in requests and in time, and it must never retry a
// request: a failure is counted, not hidden.
package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultTimeout bounds one request when a run sets no Timeout.
const DefaultTimeout = 10 * time.Second

// failed marks a sample slot whose request failed or was never sent.
const failed = time.Duration(-1)

// contentType is shared by every request; the transport only reads it.
var contentType = []string{"application/json"}

// Target is one request to repeat: a JSON body POSTed to URL. Body is
// shared by every request of a run and must not change during it.
type Target struct {
	URL  string
	Body []byte
}

// Client sends load through one shared transport.
type Client struct {
	hc *http.Client
}

// NewClient returns a client whose transport keeps up to maxIdlePerHost
// idle connections to each host, so a run at concurrency up to that
// number never dials twice. It asks for no compression, and never follows
// redirects.
func NewClient(maxIdlePerHost int) *Client {
	if maxIdlePerHost <= 0 {
		maxIdlePerHost = 1024
	}
	tr := &http.Transport{
		Proxy:               nil, // benchmarks talk to loopback; never via env proxies
		MaxIdleConns:        0,   // no total limit; the per-host limit bounds it
		MaxIdleConnsPerHost: maxIdlePerHost,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &Client{hc: &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}
}

// CloseIdleConnections closes the transport's idle connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// Result is what a run measured.
type Result struct {
	// Sent counts requests that were started.
	Sent int
	// OK counts requests answered with a 2xx status and read to the end
	// (for streams: with a content event and a final [DONE]).
	OK int
	// Errors counts requests that were sent but failed: a non-2xx status,
	// a transport error, a timeout or a cut stream.
	Errors int
	// Unsent counts requests an open loop planned but did not start before
	// its time bound or cancellation.
	Unsent int
	// FirstError describes the first failure, or is empty.
	FirstError string
	// SendSpan is the time over which requests were started, in the sense
	// of Sent intervals: (last start − first start) × Sent/(Sent−1).
	SendSpan time.Duration
	// Elapsed is from the start of the run to the last completion.
	Elapsed time.Duration
	// Latencies holds one sample per successful request, sorted. In an
	// open loop it runs from the scheduled send time, so a stalled server
	// or a busy generator cannot hide queueing; in other runs from the
	// actual send. For streams it is the time to the end of the stream.
	Latencies []time.Duration
	// TTFT holds, for streams only, the time to the first event carrying
	// content, one per successful request, sorted.
	TTFT []time.Duration
	// Lateness holds, for open loops only, how late each request started
	// against its schedule, sorted: the generator's own noise.
	Lateness []time.Duration
}

// AchievedRate is the rate at which requests were started, per second.
func (r *Result) AchievedRate() float64 {
	if r.SendSpan <= 0 {
		return 0
	}
	return float64(r.Sent) / r.SendSpan.Seconds()
}

// Throughput is successful requests per second of Elapsed.
func (r *Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.OK) / r.Elapsed.Seconds()
}

// P50 is the median latency, or 0 without samples.
func (r *Result) P50() time.Duration { return Percentile(r.Latencies, 0.50) }

// P99 is the 99th percentile latency, or 0 without samples.
func (r *Result) P99() time.Duration { return Percentile(r.Latencies, 0.99) }

// Percentile returns the q-quantile (0 < q ≤ 1) of sorted by the nearest
// rank method: the smallest sample with at least q of all samples at or
// below it. It returns 0 for no samples.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(q*float64(n) + 0.999999999) // ceil without float noise
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Merge pools the samples and counts of rs, such as the interleaved rounds
// of one scenario, into one result.
func Merge(rs ...Result) Result {
	var m Result
	var nl, nt, nz int
	for i := range rs {
		nl += len(rs[i].Latencies)
		nt += len(rs[i].TTFT)
		nz += len(rs[i].Lateness)
	}
	m.Latencies = make([]time.Duration, 0, nl)
	if nt > 0 {
		m.TTFT = make([]time.Duration, 0, nt)
	}
	if nz > 0 {
		m.Lateness = make([]time.Duration, 0, nz)
	}
	for _, r := range rs {
		m.Sent += r.Sent
		m.OK += r.OK
		m.Errors += r.Errors
		m.Unsent += r.Unsent
		if m.FirstError == "" {
			m.FirstError = r.FirstError
		}
		m.SendSpan += r.SendSpan
		m.Elapsed += r.Elapsed
		m.Latencies = append(m.Latencies, r.Latencies...)
		m.TTFT = append(m.TTFT, r.TTFT...)
		m.Lateness = append(m.Lateness, r.Lateness...)
	}
	slices.Sort(m.Latencies)
	slices.Sort(m.TTFT)
	slices.Sort(m.Lateness)
	return m
}

// errorLog counts failures and keeps the first one's description.
type errorLog struct {
	n     atomic.Int64
	once  sync.Once
	first string
}

func (e *errorLog) add(err error) {
	e.n.Add(1)
	e.once.Do(func() { e.first = err.Error() })
}

// statusError is a response with a status outside 2xx.
type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("status %d: %s", e.code, e.body)
}

// send POSTs t.Body to t.URL, reads the whole response and reports an
// error for anything but a 2xx status.
func (c *Client) send(ctx context.Context, t *Target) error {
	resp, err := c.post(ctx, t)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("reading response: %w", err)
	}
	return nil
}

// post starts a request and checks its status; the caller reads and
// closes the body of a successful response.
func (c *Client) post(ctx context.Context, t *Target) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL, bytes.NewReader(t.Body))
	if err != nil {
		return nil, err
	}
	req.Header["Content-Type"] = contentType
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // keep the connection if cheap
		resp.Body.Close()
		return nil, &statusError{code: resp.StatusCode, body: string(bytes.TrimSpace(b))}
	}
	return resp, nil
}

// collect turns per-request slots into sorted successful samples, in place.
func collect(slots []time.Duration) []time.Duration {
	ok := slots[:0]
	for _, d := range slots {
		if d != failed {
			ok = append(ok, d)
		}
	}
	slices.Sort(ok)
	return ok
}
