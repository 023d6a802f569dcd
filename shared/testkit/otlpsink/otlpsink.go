// Package otlpsink is an OTLP/HTTP trace receiver for tests: it decodes
// what an exporter posts to /v1/traces with the OTLP protobuf types and
// keeps every span, with the service and node that sent it. It is test
// support: production code must never import it.
package otlpsink

import (
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"

	coltracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Span is one received span, flattened for assertions.
type Span struct {
	// Service and Node are the resource's service.name and
	// service.instance.id.
	Service, Node string
	Name          string
	Kind          tracev1.Span_SpanKind
	// TraceID, SpanID and ParentID are lowercase hex; ParentID is ""
	// for a root span.
	TraceID, SpanID, ParentID string
	// Attrs are the span's attributes rendered as strings (ints in
	// decimal, doubles with %g).
	Attrs map[string]string
	// Error is set when the span's status is an error.
	Error bool
}

// Sink is a running receiver.
type Sink struct {
	// URL is the receiver's base URL, for telemetry.Config.OTLPEndpoint.
	URL string

	mu    sync.Mutex
	spans []Span
}

// Start starts a receiver on loopback, closed when the test ends.
func Start(t testing.TB) *Sink {
	t.Helper()
	s := &Sink{}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *Sink) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req coltracev1.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var got []Span
	for _, rs := range req.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				got = append(got, Span{
					Service: res["service.name"], Node: res["service.instance.id"],
					Name: sp.GetName(), Kind: sp.GetKind(),
					TraceID: hex.EncodeToString(sp.GetTraceId()), SpanID: hex.EncodeToString(sp.GetSpanId()),
					ParentID: hex.EncodeToString(sp.GetParentSpanId()),
					Attrs:    attrs(sp.GetAttributes()),
					Error:    sp.GetStatus().GetCode() == tracev1.Status_STATUS_CODE_ERROR,
				})
			}
		}
	}
	s.mu.Lock()
	s.spans = append(s.spans, got...)
	s.mu.Unlock()
	out, _ := proto.Marshal(&coltracev1.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// Spans returns the spans received so far.
func (s *Sink) Spans() []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Span(nil), s.spans...)
}

// Trace returns the received spans of one trace.
func (s *Sink) Trace(traceID string) []Span {
	var out []Span
	for _, sp := range s.Spans() {
		if sp.TraceID == traceID {
			out = append(out, sp)
		}
	}
	return out
}

func attrs(kvs []*commonv1.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = render(kv.GetValue())
	}
	return m
}

func render(v *commonv1.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonv1.AnyValue_StringValue:
		return x.StringValue
	case *commonv1.AnyValue_IntValue:
		return strconvInt(x.IntValue)
	case *commonv1.AnyValue_DoubleValue:
		return strconvFloat(x.DoubleValue)
	case *commonv1.AnyValue_BoolValue:
		if x.BoolValue {
			return "true"
		}
		return "false"
	}
	return v.String()
}

func strconvInt(v int64) string     { return strconv.FormatInt(v, 10) }
func strconvFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
