package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	anthropicapi "github.com/meridian-mesh/meridian/edge/api/anthropic"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/jobswire"
	"github.com/nats-io/nats.go/jetstream"
)

// Anthropic Message Batches (/v1/messages/batches): the same machinery
// as OpenAI's batches, in Anthropic's shapes. A batch's requests are
// kept as an input file of OpenAI-style lines whose url is
// /v1/messages (purpose anthropic_batch, left out of file listings),
// its record under "a." (so OpenAI's batch listing never shows it), and
// each line runs through the node's own /v1/messages with the
// anthropic-version the batch was created with. Results are read from
// the output and error files the finalizer writes, plus, for a batch
// that ended early, the requests never run (canceled or expired).

const (
	kindAnthropic    = "anthropic"
	anthropicPurpose = "anthropic_batch"
	anthropicVersion = "2023-06-01"
	// maxAnthropicRequests bounds one batch, as Anthropic does.
	maxAnthropicRequests = 100_000
)

var anthropicCustomID = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

func anthKey(owner, id string) string { return "a." + jobswire.Token(owner) + "." + id }

// MessageBatch is Anthropic's message batch object.
type MessageBatch struct {
	ID                string        `json:"id"`
	Type              string        `json:"type"` // "message_batch"
	ProcessingStatus  string        `json:"processing_status"`
	RequestCounts     MessageCounts `json:"request_counts"`
	EndedAt           *string       `json:"ended_at"`
	CreatedAt         string        `json:"created_at"`
	ExpiresAt         string        `json:"expires_at"`
	ArchivedAt        *string       `json:"archived_at"`
	CancelInitiatedAt *string       `json:"cancel_initiated_at"`
	ResultsURL        *string       `json:"results_url"`
}

// MessageCounts is a message batch's request_counts.
type MessageCounts struct {
	Processing int `json:"processing"`
	Succeeded  int `json:"succeeded"`
	Errored    int `json:"errored"`
	Canceled   int `json:"canceled"`
	Expired    int `json:"expired"`
}

func rfc3339(unix *int64) *string {
	if unix == nil {
		return nil
	}
	s := time.Unix(*unix, 0).UTC().Format(time.RFC3339)
	return &s
}

// messageBatch renders rec in Anthropic's shape; base is the URL the
// results are read at (scheme and host of the request).
func (rec *record) messageBatch(base string) MessageBatch {
	b := rec.Batch
	c := b.RequestCounts
	mb := MessageBatch{ID: b.ID, Type: "message_batch", ProcessingStatus: "in_progress",
		CreatedAt: *rfc3339(&b.CreatedAt), CancelInitiatedAt: rfc3339(b.CancellingAt)}
	if b.ExpiresAt != nil {
		mb.ExpiresAt = *rfc3339(b.ExpiresAt)
	}
	mb.RequestCounts = MessageCounts{Succeeded: c.Completed, Errored: c.Failed}
	rest := max(c.Total-c.Completed-c.Failed, 0)
	switch b.Status {
	case StatusCancelling:
		mb.ProcessingStatus, mb.RequestCounts.Processing = "canceling", rest
	case StatusCancelled, StatusExpired, StatusCompleted, StatusFailed:
		mb.ProcessingStatus = "ended"
		for _, at := range []*int64{b.CompletedAt, b.CancelledAt, b.ExpiredAt, b.FailedAt} {
			if at != nil {
				mb.EndedAt = rfc3339(at)
			}
		}
		if b.Status == StatusCancelled {
			mb.RequestCounts.Canceled = rest
		} else {
			mb.RequestCounts.Expired = rest
		}
		u := base + "/v1/messages/batches/" + b.ID + "/results"
		mb.ResultsURL = &u
	default:
		mb.RequestCounts.Processing = rest
	}
	return mb
}

func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Service) anthFail(w http.ResponseWriter, r *http.Request, e *llm.Error) {
	if e.Cause != nil {
		s.log.Warn("message batches API", "status", e.Status, "err", e.Cause)
	}
	anthropicapi.WriteError(w, r, e)
}

// anthBegin authenticates in Anthropic's error shape.
func (s *Service) anthBegin(w http.ResponseWriter, r *http.Request) (string, *bus, bool) {
	id, e := s.cfg.Authenticate(r)
	if e != nil {
		anthropicapi.WriteError(w, r, e)
		return "", nil, false
	}
	b := s.bus()
	if b == nil {
		anthropicapi.WriteError(w, r, errUnavailable)
		return "", nil, false
	}
	return owner(id), b, true
}

// createMessageBatch is POST /v1/messages/batches.
func (s *Service) createMessageBatch(w http.ResponseWriter, r *http.Request) {
	id, e := s.cfg.Authenticate(r)
	if e != nil {
		anthropicapi.WriteError(w, r, e)
		return
	}
	b := s.bus()
	if b == nil {
		anthropicapi.WriteError(w, r, errUnavailable)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.MaxFileBytes+1))
	if err != nil {
		s.anthFail(w, r, invalid("", "The request body cannot be read: %v", err))
		return
	}
	if int64(len(body)) > s.cfg.MaxFileBytes {
		s.anthFail(w, r, s.tooLarge())
		return
	}
	lines, file, perr := ParseMessageRequests(body, min(maxAnthropicRequests, s.cfg.MaxLines))
	if perr != nil {
		s.anthFail(w, r, perr)
		return
	}
	now := s.now()
	own := owner(id)
	fid := newID("file-", now)
	f := File{ID: fid, Object: "file", Bytes: int64(len(file)), CreatedAt: now.Unix(), Filename: "message_batch.jsonl",
		Purpose: anthropicPurpose, Status: "processed"}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	if err := b.putFile(ctx, f, own, file); err != nil {
		s.anthFail(w, r, internal(err))
		return
	}
	exp := now.Add(24 * time.Hour)
	expU := exp.Unix()
	bt := Batch{ID: newID("msgbatch_", now), Object: "batch", Endpoint: "/v1/messages", InputFileID: fid,
		CompletionWindow: "24h", Status: StatusInProgress, CreatedAt: now.Unix(), ExpiresAt: &expU,
		RequestCounts: Counts{Total: len(lines)}}
	bt.InProgressAt = &bt.CreatedAt
	rec := record{Kind: kindAnthropic, Batch: bt, Owner: own, KeyHash: keyHash(id), Deadline: exp.UnixNano(), Tenant: id.TenantID}
	key := anthKey(own, bt.ID)
	if _, err := b.batches.Create(ctx, key, mustJSON(rec)); err != nil {
		s.anthFail(w, r, internal(err))
		return
	}
	version := r.Header.Get("Anthropic-Version")
	if version == "" {
		version = anthropicVersion
	}
	if err := s.publish(ctx, b, key, rec, lines, map[string]string{"Anthropic-Version": version}); err != nil {
		s.anthFail(w, r, internal(err))
		return
	}
	if cur, _, err := b.record(ctx, key); err == nil && cur != nil {
		rec = *cur
	}
	writeJSON(w, http.StatusOK, rec.messageBatch(baseURL(r)))
}

func validMessageBatchID(id string) bool {
	rest, ok := strings.CutPrefix(id, "msgbatch_")
	return ok && validBatchID("batch_"+rest)
}

// messageBatchOf reads the caller's message batch the path names,
// checking it along the way like a poll of an OpenAI batch does.
func (s *Service) messageBatchOf(ctx context.Context, w http.ResponseWriter, r *http.Request) (*bus, string, *record, bool) {
	own, b, ok := s.anthBegin(w, r)
	if !ok {
		return nil, "", nil, false
	}
	mid := r.PathValue("id")
	nf := llm.Errorf(http.StatusNotFound, llm.TypeNotFound, "", "No message batch with ID '%s'.", mid)
	if !validMessageBatchID(mid) {
		s.anthFail(w, r, nf)
		return nil, "", nil, false
	}
	key := anthKey(own, mid)
	rec, _, err := b.record(ctx, key)
	if err != nil {
		s.anthFail(w, r, internal(err))
		return nil, "", nil, false
	}
	if rec == nil {
		s.anthFail(w, r, nf)
		return nil, "", nil, false
	}
	if !terminal(rec.Batch.Status) {
		if err := s.check(ctx, b, key, rec); err != nil {
			s.log.Warn("message batch check", "batch", mid, "err", err)
		}
		if cur, _, err := b.record(ctx, key); err == nil && cur != nil {
			rec = cur
		}
	}
	return b, key, rec, true
}

// getMessageBatch is GET /v1/messages/batches/{id}.
func (s *Service) getMessageBatch(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	if _, _, rec, ok := s.messageBatchOf(ctx, w, r); ok {
		writeJSON(w, http.StatusOK, rec.messageBatch(baseURL(r)))
	}
}

// cancelMessageBatch is POST /v1/messages/batches/{id}/cancel.
func (s *Service) cancelMessageBatch(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	b, key, rec, ok := s.messageBatchOf(ctx, w, r)
	if !ok {
		return
	}
	if !terminal(rec.Batch.Status) && rec.Batch.Status != StatusFinalizing {
		if err := s.finalize(ctx, b, key, StatusCancelled); err != nil {
			s.anthFail(w, r, internal(err))
			return
		}
		if cur, _, err := b.record(ctx, key); err == nil && cur != nil {
			rec = cur
		}
	}
	writeJSON(w, http.StatusOK, rec.messageBatch(baseURL(r)))
}

// messageResult is one line of a message batch's results.
type messageResult struct {
	CustomID string `json:"custom_id"`
	Result   struct {
		Type    string          `json:"type"`
		Message json.RawMessage `json:"message,omitempty"`
		Error   json.RawMessage `json:"error,omitempty"`
	} `json:"result"`
}

// messageBatchResults is GET /v1/messages/batches/{id}/results: JSONL,
// one line per request in input order, once the batch has ended.
func (s *Service) messageBatchResults(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	b, _, rec, ok := s.messageBatchOf(ctx, w, r)
	if !ok {
		return
	}
	if !terminal(rec.Batch.Status) {
		e := llm.Errorf(http.StatusNotFound, llm.TypeNotFound, "", "Message batch '%s' has not ended; its results are not ready.", rec.Batch.ID)
		s.anthFail(w, r, e)
		return
	}
	byID := map[string]OutputLine{}
	for _, fid := range []*string{rec.Batch.OutputFileID, rec.Batch.ErrorFileID} {
		if fid == nil {
			continue
		}
		data, err := b.files.GetBytes(ctx, *fid)
		if err != nil {
			s.anthFail(w, r, internal(err))
			return
		}
		for _, l := range bytes.Split(data, []byte("\n")) {
			var ol OutputLine
			if json.Unmarshal(l, &ol) == nil && ol.CustomID != "" {
				byID[ol.CustomID] = ol
			}
		}
	}
	input, err := b.files.GetBytes(ctx, rec.Batch.InputFileID)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		s.anthFail(w, r, internal(err))
		return
	}
	var order []string
	for _, l := range bytes.Split(input, []byte("\n")) {
		var in struct {
			CustomID string `json:"custom_id"`
		}
		if json.Unmarshal(l, &in) == nil && in.CustomID != "" {
			order = append(order, in.CustomID)
		}
	}
	if len(order) == 0 { // the input is gone: what ran, by custom_id
		for id := range byID {
			order = append(order, id)
		}
		sort.Strings(order)
	}
	w.Header().Set("Content-Type", "application/binary")
	var buf bytes.Buffer
	for _, cid := range order {
		mr := messageResult{CustomID: cid}
		ol, ran := byID[cid]
		switch {
		case ran && ol.Response != nil && ol.Response.StatusCode >= 200 && ol.Response.StatusCode < 300:
			mr.Result.Type, mr.Result.Message = "succeeded", ol.Response.Body
		case ran && ol.Response != nil:
			mr.Result.Type, mr.Result.Error = "errored", ol.Response.Body
			if !bytes.HasPrefix(bytes.TrimSpace(ol.Response.Body), []byte(`{"type":"error"`)) {
				mr.Result.Error = mustJSON(map[string]any{"type": "error", "error": map[string]any{"type": "api_error",
					"message": "The request failed with status " + strconv.Itoa(ol.Response.StatusCode) + "."}})
			}
		case rec.Batch.Status == StatusCancelled:
			mr.Result.Type = "canceled"
		default:
			mr.Result.Type = "expired"
		}
		buf.Write(mustJSON(mr))
		buf.WriteByte('\n')
	}
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Write(buf.Bytes())
}

// listMessageBatches is GET /v1/messages/batches: newest first, limit
// (1–1000, default 20) after_id / before_id as Anthropic pages.
func (s *Service) listMessageBatches(w http.ResponseWriter, r *http.Request) {
	own, b, ok := s.anthBegin(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.anthFail(w, r, invalid("limit", "limit must be a whole number from 1 to 1000."))
			return
		}
		limit = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	prefix := anthKey(own, "")
	kl, err := b.batches.ListKeysFiltered(ctx, prefix+"*")
	if err != nil {
		s.anthFail(w, r, internal(err))
		return
	}
	var ids []string
	for k := range kl.Keys() {
		ids = append(ids, strings.TrimPrefix(k, prefix))
	}
	kl.Stop()
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	if after := q.Get("after_id"); after != "" {
		ids = ids[sort.Search(len(ids), func(i int) bool { return ids[i] < after }):]
	}
	if before := q.Get("before_id"); before != "" {
		i := sort.Search(len(ids), func(i int) bool { return ids[i] <= before })
		ids = ids[:i]
		if len(ids) > limit {
			ids = ids[len(ids)-limit:]
		}
	}
	more := len(ids) > limit
	if more {
		ids = ids[:limit]
	}
	out := struct {
		Data    []MessageBatch `json:"data"`
		HasMore bool           `json:"has_more"`
		FirstID *string        `json:"first_id"`
		LastID  *string        `json:"last_id"`
	}{Data: []MessageBatch{}, HasMore: more}
	for _, id := range ids {
		rec, _, err := b.record(ctx, prefix+id)
		if err != nil {
			s.anthFail(w, r, internal(err))
			return
		}
		if rec != nil {
			out.Data = append(out.Data, rec.messageBatch(baseURL(r)))
		}
	}
	if n := len(out.Data); n > 0 {
		out.FirstID, out.LastID = &out.Data[0].ID, &out.Data[n-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

// ParseMessageRequests checks a POST /v1/messages/batches body (at most
// max requests, each with a unique custom_id of 1–64 letters, digits,
// '_' or '-', and params naming a model, not streaming) and returns its
// lines and the input file that keeps them.
func ParseMessageRequests(body []byte, max int) ([]Line, []byte, *llm.Error) {
	var req struct {
		Requests []struct {
			CustomID string          `json:"custom_id"`
			Params   json.RawMessage `json:"params"`
		} `json:"requests"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, nil, invalid("", "The request body is not valid JSON: %v", err)
	}
	if len(req.Requests) == 0 || len(req.Requests) > max {
		return nil, nil, invalid("requests", "requests must hold 1 to %d requests.", max)
	}
	seen := map[string]bool{}
	var lines []Line
	var file bytes.Buffer
	for i, rq := range req.Requests {
		field := fmt.Sprintf("requests.%d", i)
		if !anthropicCustomID.MatchString(rq.CustomID) {
			return nil, nil, invalid(field+".custom_id", "%s.custom_id must be 1 to 64 letters, digits, '_' or '-'.", field)
		}
		if seen[rq.CustomID] {
			return nil, nil, invalid(field+".custom_id", "custom_id %q is used twice.", rq.CustomID)
		}
		seen[rq.CustomID] = true
		var p rawBody
		if len(rq.Params) == 0 || rq.Params[0] != '{' || json.Unmarshal(rq.Params, &p) != nil || p.Model == nil || *p.Model == "" {
			return nil, nil, invalid(field+".params", "%s.params must be a Messages request naming a model.", field)
		}
		if p.Stream != nil && strings.TrimSpace(string(*p.Stream)) == "true" {
			return nil, nil, invalid(field+".params.stream", "Batch requests cannot stream.")
		}
		l := Line{Index: i, CustomID: rq.CustomID, Method: http.MethodPost, URL: "/v1/messages", Model: *p.Model, Body: rq.Params}
		lines = append(lines, l)
		file.Write(mustJSON(map[string]any{"custom_id": l.CustomID, "method": l.Method, "url": l.URL, "body": l.Body}))
		file.WriteByte('\n')
	}
	return lines, file.Bytes(), nil
}
