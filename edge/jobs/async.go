package jobs

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	anthropicapi "github.com/meridian-mesh/meridian/edge/api/anthropic"
	openaiapi "github.com/meridian-mesh/meridian/edge/api/openai"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/jobswire"
)

// Single async requests: POST /v1/chat/completions or /v1/messages with
// "Prefer: respond-async" (RFC 7240) is answered 202 with a job, which
// is a one-line batch on the same stream (its record under "j."
// rather than "b.", so batch listings never show it). GET
// /v1/meridian/jobs/{id} reads its state and, once done, the answer in
// the format of the endpoint it was sent to.

// AsyncPaths are the endpoints that accept Prefer: respond-async.
var AsyncPaths = []string{"/v1/chat/completions", "/v1/messages"}

// HeaderWebhookURL names an async request's callback URL, checked
// against the tenant's webhook_allow like a batch's webhook_url.
const HeaderWebhookURL = "X-Meridian-Webhook-Url"

// forwardedHeaders are the request headers a job keeps for its run:
// the Anthropic surface reads them.
var forwardedHeaders = []string{"Anthropic-Version", "Anthropic-Beta"}

// asyncWindow is how long an async request may wait to run.
const asyncWindow = 24 * time.Hour

// PrefersAsync reports whether r asks to be answered asynchronously.
func PrefersAsync(r *http.Request) bool {
	if r.Method != http.MethodPost {
		return false
	}
	known := false
	for _, p := range AsyncPaths {
		known = known || r.URL.Path == p
	}
	if !known {
		return false
	}
	for _, v := range r.Header.Values("Prefer") {
		for _, p := range strings.Split(v, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(p), ";")
			if strings.EqualFold(strings.TrimSpace(name), "respond-async") {
				return true
			}
		}
	}
	return false
}

// Job is an async request as GET /v1/meridian/jobs/{id} shows it.
type Job struct {
	ID          string `json:"id"`
	Object      string `json:"object"` // "meridian.job"
	Endpoint    string `json:"endpoint"`
	Model       string `json:"model"`
	Status      string `json:"status"` // in_progress, completed, failed, expired
	CreatedAt   int64  `json:"created_at"`
	CompletedAt *int64 `json:"completed_at"`
	ExpiresAt   *int64 `json:"expires_at"`
	// StatusCode and Result are the answer, once there is one: the
	// body exactly as the endpoint answers it (the client's format).
	StatusCode *int            `json:"status_code,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
}

// Job statuses beyond the batch ones.
const (
	JobCompleted = "completed"
	JobFailed    = "failed"
)

func jobKey(owner, id string) string { return "j." + jobswire.Token(owner) + "." + id }

func validJobID(id string) bool {
	rest, ok := strings.CutPrefix(id, "job_")
	return ok && validBatchID("batch_"+rest)
}

// writeErrorFor answers e in the format of the endpoint r was sent to.
func writeErrorFor(w http.ResponseWriter, r *http.Request, e *llm.Error) {
	if r.URL.Path == "/v1/messages" || strings.HasPrefix(r.URL.Path, "/v1/messages/") {
		anthropicapi.WriteError(w, r, e)
		return
	}
	openaiapi.WriteError(w, e)
}

// SubmitAsync answers a request that PrefersAsync: 202 and the job,
// with Preference-Applied: respond-async and Location.
func (s *Service) SubmitAsync(w http.ResponseWriter, r *http.Request) {
	id, e := s.cfg.Authenticate(r)
	if e != nil {
		writeErrorFor(w, r, e)
		return
	}
	b := s.bus()
	if b == nil {
		writeErrorFor(w, r, errUnavailable)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, jobswire.MaxLineBytes))
	if err != nil {
		writeErrorFor(w, r, invalid("", "The request body cannot be read: %v", err))
		return
	}
	if len(body) >= jobswire.MaxLineBytes-4096 {
		e := llm.Errorf(http.StatusRequestEntityTooLarge, llm.TypeInvalidRequest, "", "An async request's body is at most %d bytes.", jobswire.MaxLineBytes-4096)
		writeErrorFor(w, r, e)
		return
	}
	var rb rawBody
	if err := json.Unmarshal(body, &rb); err != nil {
		writeErrorFor(w, r, invalid("", "The request body is not valid JSON: %v", err))
		return
	}
	if rb.Model == nil || *rb.Model == "" {
		writeErrorFor(w, r, invalid("model", "Missing required parameter: 'model'."))
		return
	}
	if rb.Stream != nil && strings.TrimSpace(string(*rb.Stream)) == "true" {
		writeErrorFor(w, r, invalid("stream", "An async request cannot stream: its answer is read with GET /v1/meridian/jobs/{id}."))
		return
	}
	hook := r.Header.Get(HeaderWebhookURL)
	if e := checkCallback(id, hook); e != nil {
		e.Param = HeaderWebhookURL
		writeErrorFor(w, r, e)
		return
	}
	hdr := map[string]string{}
	for _, h := range forwardedHeaders {
		if v := r.Header.Get(h); v != "" {
			hdr[h] = v
		}
	}
	now := s.now()
	own := owner(id)
	jid := newID("job_", now)
	exp := now.Add(asyncWindow).Unix()
	rec := record{Kind: kindJob, Owner: own, KeyHash: keyHash(id), Deadline: now.Add(asyncWindow).UnixNano(),
		Tenant: id.TenantID, WebhookURL: hook, Model: *rb.Model,
		Batch: Batch{ID: jid, Object: "batch", Endpoint: r.URL.Path, CompletionWindow: "24h", Status: StatusInProgress,
			CreatedAt: now.Unix(), ExpiresAt: &exp, RequestCounts: Counts{Total: 1}}}
	rec.Batch.InProgressAt = &rec.Batch.CreatedAt
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	key := jobKey(own, jid)
	if _, err := b.batches.Create(ctx, key, mustJSON(rec)); err != nil {
		writeErrorFor(w, r, internal(err))
		return
	}
	line := Line{Index: 0, CustomID: jid, Method: http.MethodPost, URL: r.URL.Path, Model: *rb.Model, Body: body}
	if err := s.publish(ctx, b, key, rec, []Line{line}, hdr); err != nil {
		writeErrorFor(w, r, internal(err))
		return
	}
	w.Header().Set("Preference-Applied", "respond-async")
	w.Header().Set("Location", "/v1/meridian/jobs/"+jid)
	writeJSON(w, http.StatusAccepted, rec.job())
}

// job is the record as GET /v1/meridian/jobs/{id} shows it.
func (rec *record) job() Job {
	j := Job{ID: rec.Batch.ID, Object: "meridian.job", Endpoint: rec.Batch.Endpoint, Model: rec.Model,
		Status: rec.Batch.Status, CreatedAt: rec.Batch.CreatedAt, ExpiresAt: rec.Batch.ExpiresAt}
	switch rec.Batch.Status {
	case StatusCompleted:
		j.CompletedAt = rec.Batch.CompletedAt
		j.Status = JobCompleted
		if rec.Batch.RequestCounts.Failed > 0 {
			j.Status = JobFailed
		}
	case StatusValidating, StatusFinalizing:
		j.Status = StatusInProgress
	}
	if rec.Response != nil {
		code := rec.Response.StatusCode
		j.StatusCode, j.Result = &code, rec.Response.Body
	}
	return j
}

// getJob is GET /v1/meridian/jobs/{id}.
func (s *Service) getJob(w http.ResponseWriter, r *http.Request) {
	id, b, ok := s.begin(w, r)
	if !ok {
		return
	}
	jid := r.PathValue("id")
	if !validJobID(jid) {
		s.fail(w, notFound("job", jid))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	key := jobKey(owner(id), jid)
	rec, _, err := b.record(ctx, key)
	if err != nil {
		s.fail(w, internal(err))
		return
	}
	if rec == nil {
		s.fail(w, notFound("job", jid))
		return
	}
	if !terminal(rec.Batch.Status) {
		if err := s.check(ctx, b, key, rec); err != nil {
			s.log.Warn("job check", "job", jid, "err", err)
		}
		if cur, _, err := b.record(ctx, key); err == nil && cur != nil {
			rec = cur
		}
	}
	writeJSON(w, http.StatusOK, rec.job())
}
