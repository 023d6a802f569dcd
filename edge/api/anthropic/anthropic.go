// Package anthropic is the edge's Anthropic Messages API surface,
// POST /v1/messages, so Anthropic's SDKs work against Meridian unchanged
// and reach any model: a local one, an OpenAI-compatible upstream,
// Gemini, or Anthropic itself.
//
// It decodes requests into the canonical llm.Request, and turns canonical
// answers back into Anthropic's message objects and its streaming event
// sequence (message_start, content_block_start, ping,
// content_block_delta, content_block_stop, message_delta, message_stop).
// Errors use Anthropic's shape and statuses, 529 for overload included.
// A stream that breaks after its first byte ends with an error event and
// no message_stop.
package anthropic

import (
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/gateway"
	"github.com/meridian-mesh/meridian/edge/limits"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

// Surface serves the Anthropic Messages API.
type Surface struct {
	cfg api.Config
}

// New returns a Surface.
func New(cfg api.Config) *Surface {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Surface{cfg: cfg}
}

// Register adds the surface's routes to mux.
func (s *Surface) Register(mux *http.ServeMux) {
	mux.Handle("/v1/messages", s.cfg.Handler(format{}, decode))
	mux.HandleFunc("/v1/messages/count_tokens", s.countTokens)
	mux.HandleFunc("/v1/messages/{rest...}", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, llm.Errorf(http.StatusNotFound, llm.TypeNotFound, "", "Not found: %s %s.", r.Method, r.URL.Path))
	})
}

// Anthropic's error types and the statuses it sends them with.
var errorTypes = map[string]struct {
	typ    string
	status int // 0: keep the canonical error's status
}{
	llm.TypeInvalidRequest: {"invalid_request_error", 0},
	llm.TypeAuthentication: {"authentication_error", http.StatusUnauthorized},
	llm.TypeNotFound:       {"not_found_error", http.StatusNotFound},
	llm.TypePermission:     {"permission_error", http.StatusForbidden},
	llm.TypeRateLimit:      {"rate_limit_error", http.StatusTooManyRequests},
	llm.TypeOverloaded:     {"overloaded_error", 529},
	llm.TypeUpstream:       {"api_error", 0},
	llm.TypeTimeout:        {"api_error", 0},
	llm.TypeServer:         {"api_error", 0},
}

func anthropicError(e *llm.Error) (typ string, status int) {
	t, ok := errorTypes[e.Type]
	if !ok {
		t = errorTypes[llm.TypeServer]
	}
	status = e.Status
	if t.status != 0 {
		status = t.status
	}
	switch {
	case status == http.StatusNotFound:
		return "not_found_error", status
	case status == http.StatusRequestEntityTooLarge:
		return "request_too_large", status
	case status == 0:
		status = http.StatusInternalServerError
	}
	return t.typ, status
}

func appendErrorBody(b []byte, e *llm.Error, requestID string) []byte {
	typ, _ := anthropicError(e)
	b = append(b, `{"type":"error","error":{"type":`...)
	b = llm.AppendJSONString(b, typ)
	b = append(b, `,"message":`...)
	b = llm.AppendJSONString(b, e.Message)
	b = append(b, '}')
	if requestID != "" {
		b = append(b, `,"request_id":`...)
		b = llm.AppendJSONString(b, requestID)
	}
	return append(b, '}')
}

// WriteError writes e in Anthropic's error shape, with its status.
func WriteError(w http.ResponseWriter, r *http.Request, e *llm.Error) {
	_, status := anthropicError(e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	w.WriteHeader(status)
	w.Write(appendErrorBody(nil, e, r.Header.Get(api.HeaderRequestID)))
}

// format is Anthropic's side of the request pipeline (api.Format).
type format struct{}

var _ api.Format = format{}

func (format) WriteError(w http.ResponseWriter, r *http.Request, e *llm.Error) { WriteError(w, r, e) }

func (format) KeepAlive() []byte { return pingEvent }

// RateLimitHeaders sets Anthropic's anthropic-ratelimit-* headers: the
// limit, what remains of it and when it resets fully (RFC 3339). The
// values share one string, so the headers cost two allocations.
func (format) RateLimitHeaders(h http.Header, v *limits.Verdict, now time.Time) {
	var b [128]byte
	buf, ends := b[:0], [6]int{}
	names := [6]string{"Anthropic-Ratelimit-Requests-Limit", "Anthropic-Ratelimit-Requests-Remaining", "Anthropic-Ratelimit-Requests-Reset",
		"Anthropic-Ratelimit-Tokens-Limit", "Anthropic-Ratelimit-Tokens-Remaining", "Anthropic-Ratelimit-Tokens-Reset"}
	for i, st := range [2]*limits.State{&v.Requests, &v.TokenState} {
		if !st.Has {
			ends[3*i], ends[3*i+1], ends[3*i+2] = len(buf), len(buf), len(buf)
			continue
		}
		buf = strconv.AppendInt(buf, st.Limit, 10)
		ends[3*i] = len(buf)
		buf = strconv.AppendInt(buf, st.Remaining, 10)
		ends[3*i+1] = len(buf)
		buf = now.Add(st.Reset).UTC().Truncate(time.Second).AppendFormat(buf, time.RFC3339)
		ends[3*i+2] = len(buf)
	}
	all := string(buf)
	vals := make([]string, 6)
	start := 0
	for i, end := range ends {
		if end > start {
			vals[i] = all[start:end]
			h[names[i]] = vals[i : i+1 : i+1]
		}
		start = end
	}
}

func (format) Encode(req *llm.Request, resp *llm.Response) ([]byte, llm.Usage, error) {
	if resp.Format == llm.FormatAnthropic {
		return resp.Body, resp.Usage, nil // an Anthropic upstream's answer, as it came
	}
	cc, err := resp.ChatCompletion()
	if err != nil {
		return nil, llm.Usage{}, err
	}
	u := resp.Usage
	if cc.Usage != nil {
		u = *cc.Usage
	}
	return appendMessage(make([]byte, 0, 1024), cc, req.Model), u, nil
}

func (format) Stream(_ *http.Request, req *llm.Request, _ *gateway.Result) api.StreamEncoder {
	t := newTranslator(req.Model, "msg_"+req.ID)
	t.requestID = req.ID
	return t
}

// decode checks the headers Anthropic requires, then the body.
func decode(r *http.Request, body []byte) (*llm.Request, *llm.Error) {
	if r.Header.Get("Anthropic-Version") == "" {
		return nil, llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, "", "anthropic-version: header is required")
	}
	req, e := DecodeMessages(body)
	if e != nil {
		return nil, e
	}
	// An Anthropic upstream gets these bytes as they are.
	req.Native, req.NativeFormat = body, llm.FormatAnthropic
	return req, nil
}

var pingEvent = []byte("event: ping\ndata: {\"type\": \"ping\"}\n\n")

// Models serves GET /v1/models in Anthropic's list shape, for Anthropic's
// SDKs (which send anthropic-version).
func (s *Surface) Models(w http.ResponseWriter, r *http.Request) {
	if !s.modelsAllowed(w, r) {
		return
	}
	models := s.cfg.Gateway.SnapshotFor(r.Context()).Table().Models()
	b := append(make([]byte, 0, 64+96*len(models)), `{"data":[`...)
	for i := range models {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendModel(b, &models[i])
	}
	b = append(b, `],"has_more":false,"first_id":`...)
	if len(models) > 0 {
		b = llm.AppendJSONString(b, models[0].ID)
		b = append(b, `,"last_id":`...)
		b = llm.AppendJSONString(b, models[len(models)-1].ID)
	} else {
		b = append(b, `null,"last_id":null`...)
	}
	b = append(b, '}')
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// Model serves GET /v1/models/{id} in Anthropic's shape.
func (s *Surface) Model(w http.ResponseWriter, r *http.Request) {
	if !s.modelsAllowed(w, r) {
		return
	}
	id := r.PathValue("id")
	m, ok := s.cfg.Gateway.SnapshotFor(r.Context()).Table().Model(id)
	if !ok {
		WriteError(w, r, llm.Errorf(http.StatusNotFound, llm.TypeNotFound, "", "model: %s", id))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(appendModel(nil, m))
}

func (s *Surface) modelsAllowed(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", http.MethodGet)
		WriteError(w, r, llm.Errorf(http.StatusMethodNotAllowed, llm.TypeInvalidRequest, "", "Method %s is not allowed for %s; use GET.", r.Method, r.URL.Path))
		return false
	}
	if _, e := s.cfg.Authenticate(r); e != nil {
		WriteError(w, r, e)
		return false
	}
	return true
}

func appendModel(b []byte, m *table.Model) []byte {
	b = append(b, `{"type":"model","id":`...)
	b = llm.AppendJSONString(b, m.ID)
	b = append(b, `,"display_name":`...)
	b = llm.AppendJSONString(b, m.ID)
	b = append(b, `,"created_at":`...)
	return append(llm.AppendJSONString(b, time.Unix(m.Created, 0).UTC().Format(time.RFC3339)), '}')
}
