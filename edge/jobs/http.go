package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	openaiapi "github.com/meridian-mesh/meridian/edge/api/openai"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/jobswire"
	"github.com/nats-io/nats.go/jetstream"
)

// Register adds the Files and Batches routes to mux.
func (s *Service) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/files", s.uploadFile)
	mux.HandleFunc("GET /v1/files", s.listFiles)
	mux.HandleFunc("GET /v1/files/{id}", s.getFile)
	mux.HandleFunc("GET /v1/files/{id}/content", s.fileContent)
	mux.HandleFunc("DELETE /v1/files/{id}", s.deleteFile)
	mux.HandleFunc("POST /v1/batches", s.createBatch)
	mux.HandleFunc("GET /v1/batches", s.listBatches)
	mux.HandleFunc("GET /v1/batches/{id}", s.getBatch)
	mux.HandleFunc("POST /v1/batches/{id}/cancel", s.cancelBatch)
	mux.HandleFunc("GET /v1/meridian/webhooks/dead", s.deadLetters)
	mux.HandleFunc("GET /v1/meridian/jobs/{id}", s.getJob)
	mux.HandleFunc("POST /v1/messages/batches", s.createMessageBatch)
	mux.HandleFunc("GET /v1/messages/batches", s.listMessageBatches)
	mux.HandleFunc("GET /v1/messages/batches/{id}", s.getMessageBatch)
	mux.HandleFunc("GET /v1/messages/batches/{id}/results", s.messageBatchResults)
	mux.HandleFunc("POST /v1/messages/batches/{id}/cancel", s.cancelMessageBatch)
}

// opTimeout bounds the bus calls of one API request.
const opTimeout = 30 * time.Second

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func invalid(param, format string, args ...any) *llm.Error {
	return llm.Errorf(http.StatusBadRequest, llm.TypeInvalidRequest, param, format, args...)
}

func notFound(what, id string) *llm.Error {
	e := llm.Errorf(http.StatusNotFound, llm.TypeInvalidRequest, "", "No such %s: '%s'", what, id)
	e.Code = "not_found"
	return e
}

var errUnavailable = &llm.Error{Status: http.StatusServiceUnavailable, Type: llm.TypeServer, Code: "batches_unavailable",
	Message:    "Batches need this edge to be connected to a control plane with JetStream, and it is not (yet); retry shortly.",
	RetryAfter: time.Second, Retryable: true}

func internal(err error) *llm.Error {
	return &llm.Error{Status: http.StatusInternalServerError, Type: llm.TypeServer, Code: "batch_store_error",
		Message: "The batch store did not answer; retry shortly.", Cause: err}
}

// begin authenticates the request and returns its owner and the bus,
// or writes the error and returns ok false.
func (s *Service) begin(w http.ResponseWriter, r *http.Request) (id api.Identity, b *bus, ok bool) {
	id, e := s.cfg.Authenticate(r)
	if e != nil {
		openaiapi.WriteError(w, e)
		return id, nil, false
	}
	if b = s.bus(); b == nil {
		openaiapi.WriteError(w, errUnavailable)
		return id, nil, false
	}
	return id, b, true
}

func (s *Service) fail(w http.ResponseWriter, e *llm.Error) {
	if e.Cause != nil {
		s.log.Warn("batch API", "status", e.Status, "err", e.Cause)
	}
	openaiapi.WriteError(w, e)
}

// uploadFile is POST /v1/files: multipart with "purpose" ("batch") and
// "file" (JSONL), checked line by line.
func (s *Service) uploadFile(w http.ResponseWriter, r *http.Request) {
	id, b, ok := s.begin(w, r)
	if !ok {
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "multipart/form-data" {
		s.fail(w, invalid("file", "Upload files as multipart/form-data with the fields 'purpose' and 'file'."))
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxFileBytes+1<<20)
	mr, err := r.MultipartReader()
	if err != nil {
		s.fail(w, invalid("file", "The multipart body cannot be read: %v", err))
		return
	}
	var purpose, filename string
	var data []byte
	haveFile := false
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			s.fail(w, s.bodyError(err))
			return
		}
		switch p.FormName() {
		case "purpose":
			v, err := io.ReadAll(io.LimitReader(p, 64))
			if err != nil {
				s.fail(w, s.bodyError(err))
				return
			}
			purpose = strings.TrimSpace(string(v))
		case "file":
			filename, haveFile = p.FileName(), true
			if data, err = io.ReadAll(io.LimitReader(p, s.cfg.MaxFileBytes+1)); err != nil {
				s.fail(w, s.bodyError(err))
				return
			}
			if int64(len(data)) > s.cfg.MaxFileBytes {
				s.fail(w, s.tooLarge())
				return
			}
		}
		p.Close()
	}
	switch {
	case purpose == "":
		s.fail(w, invalid("purpose", "Missing required parameter: 'purpose'."))
		return
	case purpose != "batch":
		s.fail(w, invalid("purpose", "Meridian accepts files with purpose 'batch' only, not '%s'.", purpose))
		return
	case !haveFile:
		s.fail(w, invalid("file", "Missing required parameter: 'file'."))
		return
	}
	if _, lerr := ParseFile(data, s.cfg.MaxLines); lerr != nil {
		e := invalid(lerr.Param, "Invalid file format for Batch API. Line %d: %s", lerr.Line, lerr.Message)
		e.Code = "invalid_file_format"
		s.fail(w, e)
		return
	}
	if filename == "" {
		filename = "batch.jsonl"
	}
	f := File{ID: newID("file-", s.now()), Object: "file", Bytes: int64(len(data)), CreatedAt: s.now().Unix(),
		Filename: filename, Purpose: purpose, Status: "processed"}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	if err := b.putFile(ctx, f, owner(id), data); err != nil {
		s.fail(w, internal(err))
		return
	}
	writeJSON(w, http.StatusOK, f)
}

func (s *Service) bodyError(err error) *llm.Error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return s.tooLarge()
	}
	return invalid("file", "The multipart body cannot be read: %v", err)
}

func (s *Service) tooLarge() *llm.Error {
	e := llm.Errorf(http.StatusRequestEntityTooLarge, llm.TypeInvalidRequest, "file", "The file is larger than this edge accepts (%d bytes).", s.cfg.MaxFileBytes)
	e.Code = "file_too_large"
	return e
}

func (b *bus) putFile(ctx context.Context, f File, own string, data []byte) error {
	_, err := b.files.Put(ctx, jetstream.ObjectMeta{Name: f.ID, Metadata: map[string]string{
		metaOwner: own, metaPurpose: f.Purpose, metaFilename: f.Filename, metaCreated: strconv.FormatInt(f.CreatedAt, 10),
	}}, bytes.NewReader(data))
	return err
}

// file returns the file id if own owns it; nil, nil when it does not
// exist for them.
func (b *bus) file(ctx context.Context, own, id string) (*File, error) {
	info, err := b.files.GetInfo(ctx, id)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if info.Deleted || info.Metadata[metaOwner] != own {
		return nil, nil
	}
	created, _ := strconv.ParseInt(info.Metadata[metaCreated], 10, 64)
	return &File{ID: id, Object: "file", Bytes: int64(info.Size), CreatedAt: created,
		Filename: info.Metadata[metaFilename], Purpose: info.Metadata[metaPurpose], Status: "processed"}, nil
}

func (s *Service) lookupFile(w http.ResponseWriter, r *http.Request) (*File, *bus, context.Context, context.CancelFunc) {
	id, b, ok := s.begin(w, r)
	if !ok {
		return nil, nil, nil, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	f, err := b.file(ctx, owner(id), r.PathValue("id"))
	if err != nil {
		cancel()
		s.fail(w, internal(err))
		return nil, nil, nil, nil
	}
	if f == nil {
		cancel()
		s.fail(w, notFound("file", r.PathValue("id")))
		return nil, nil, nil, nil
	}
	return f, b, ctx, cancel
}

func (s *Service) getFile(w http.ResponseWriter, r *http.Request) {
	f, _, _, cancel := s.lookupFile(w, r)
	if f == nil {
		return
	}
	cancel()
	writeJSON(w, http.StatusOK, f)
}

func (s *Service) fileContent(w http.ResponseWriter, r *http.Request) {
	f, b, ctx, cancel := s.lookupFile(w, r)
	if f == nil {
		return
	}
	defer cancel()
	data, err := b.files.GetBytes(ctx, f.ID)
	if err != nil {
		s.fail(w, internal(err))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Write(data)
}

func (s *Service) deleteFile(w http.ResponseWriter, r *http.Request) {
	f, b, ctx, cancel := s.lookupFile(w, r)
	if f == nil {
		return
	}
	defer cancel()
	if err := b.files.Delete(ctx, f.ID); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		s.fail(w, internal(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": f.ID, "object": "file", "deleted": true})
}

type createBatchRequest struct {
	InputFileID      string            `json:"input_file_id"`
	Endpoint         string            `json:"endpoint"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata"`
	// WebhookURL is Meridian's extension: the callback of the batch's
	// final event; metadata["webhook_url"] works too.
	WebhookURL string `json:"webhook_url"`
}

// parseWindow reads a completion_window: OpenAI's "24h", or any Go
// duration up to max (Meridian's extension, for shorter deadlines).
func parseWindow(s string, max time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 || d > max {
		return 0, fmt.Errorf("completion_window must be a duration such as '24h', at most %s", max)
	}
	return d, nil
}

func (s *Service) createBatch(w http.ResponseWriter, r *http.Request) {
	id, b, ok := s.begin(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		s.fail(w, invalid("", "The request body cannot be read: %v", err))
		return
	}
	var req createBatchRequest
	if err := json.Unmarshal(body, &req); err != nil {
		s.fail(w, invalid("", "The request body is not valid JSON: %v", err))
		return
	}
	window, werr := parseWindow(req.CompletionWindow, s.cfg.MaxWindow)
	switch {
	case req.InputFileID == "":
		s.fail(w, invalid("input_file_id", "Missing required parameter: 'input_file_id'."))
		return
	case !knownEndpoint(req.Endpoint):
		s.fail(w, invalid("endpoint", "endpoint must be one of %v.", Endpoints))
		return
	case werr != nil:
		s.fail(w, invalid("completion_window", "%v.", werr))
		return
	case len(req.Metadata) > 16:
		s.fail(w, invalid("metadata", "metadata holds at most 16 pairs."))
		return
	}
	for k, v := range req.Metadata {
		if len(k) > 64 || len(v) > 512 {
			s.fail(w, invalid("metadata", "metadata keys are at most 64 characters and values at most 512."))
			return
		}
	}
	hook := req.WebhookURL
	if hook == "" {
		hook = req.Metadata[WebhookURLField]
	}
	if e := checkCallback(id, hook); e != nil {
		s.fail(w, e)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	own := owner(id)
	f, err := b.file(ctx, own, req.InputFileID)
	if err != nil {
		s.fail(w, internal(err))
		return
	}
	if f == nil {
		s.fail(w, notFound("file", req.InputFileID))
		return
	}
	if f.Purpose != "batch" {
		s.fail(w, invalid("input_file_id", "File '%s' has purpose '%s'; a batch needs a file with purpose 'batch'.", f.ID, f.Purpose))
		return
	}
	data, err := b.files.GetBytes(ctx, f.ID)
	if err != nil {
		s.fail(w, internal(err))
		return
	}
	now := s.now()
	bt := Batch{ID: newID("batch_", now), Object: "batch", Endpoint: req.Endpoint, InputFileID: f.ID,
		CompletionWindow: req.CompletionWindow, Status: StatusValidating, CreatedAt: now.Unix(), Metadata: req.Metadata}
	exp := now.Add(window).Unix()
	bt.ExpiresAt = &exp
	rec := record{Batch: bt, Owner: own, KeyHash: keyHash(id), Deadline: now.Add(window).UnixNano(),
		Tenant: id.TenantID, WebhookURL: hook}
	key := batchKey(own, bt.ID)
	lines, lerr := ParseFile(data, s.cfg.MaxLines)
	if lerr == nil {
		for _, l := range lines {
			if l.URL != req.Endpoint {
				lerr = &LineError{Line: l.Index + 1, Param: "url", Message: fmt.Sprintf("the line's url %q is not the batch's endpoint %q", l.URL, req.Endpoint)}
				break
			}
		}
	}
	if lerr != nil {
		line, param := lerr.Line, lerr.Param
		rec.Batch.Status, rec.Batch.FailedAt = StatusFailed, &bt.CreatedAt
		rec.Batch.Errors = &BatchErrors{Object: "list", Data: []BatchError{{Code: "invalid_request", Message: lerr.Message, Param: &param, Line: &line}}}
		if err := s.emit(ctx, b, &rec, bt.ID, "batch.failed", map[string]string{"id": bt.ID}); err != nil {
			s.fail(w, internal(err))
			return
		}
		if _, err := b.batches.Create(ctx, key, mustJSON(rec)); err != nil {
			s.fail(w, internal(err))
			return
		}
		writeJSON(w, http.StatusOK, rec.Batch)
		return
	}
	rec.Batch.RequestCounts.Total = len(lines)
	rev, err := b.batches.Create(ctx, key, mustJSON(rec))
	if err != nil {
		s.fail(w, internal(err))
		return
	}
	if err := s.enqueue(ctx, b, key, rec, lines); err != nil {
		s.fail(w, internal(err))
		return
	}
	rec.Batch.Status = StatusInProgress
	at := s.now().Unix()
	rec.Batch.InProgressAt = &at
	if _, err := b.batches.Update(ctx, key, mustJSON(rec), rev); err != nil {
		// A worker has already counted a line (or finished the batch):
		// its record says in_progress, or later, already.
		if cur, _, gerr := b.record(ctx, key); gerr == nil && cur != nil {
			rec = *cur
		}
	}
	writeJSON(w, http.StatusOK, rec.Batch)
}

// enqueue makes sure each model has its consumer, then publishes every
// line, with a message ID per line so a retried publish runs it once.
func (s *Service) enqueue(ctx context.Context, b *bus, key string, rec record, lines []Line) error {
	return s.publish(ctx, b, key, rec, lines, nil)
}

// publish is enqueue with the headers every line runs with.
func (s *Service) publish(ctx context.Context, b *bus, key string, rec record, lines []Line, hdr map[string]string) error {
	models := map[string]bool{}
	for _, l := range lines {
		if models[l.Model] {
			continue
		}
		models[l.Model] = true
		_, err := b.js.CreateOrUpdateConsumer(ctx, jobswire.Stream, jetstream.ConsumerConfig{
			Durable: jobswire.ConsumerName(l.Model), FilterSubject: jobswire.ModelFilter(l.Model),
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: s.cfg.AckWait, MaxDeliver: s.cfg.MaxDeliver,
			MaxAckPending: 1024, DeliverPolicy: jetstream.DeliverAllPolicy,
			Metadata: map[string]string{jobswire.ConsumerModelKey: l.Model},
		})
		if err != nil {
			return fmt.Errorf("consumer for %q: %w", l.Model, err)
		}
	}
	var futures []jetstream.PubAckFuture
	for _, l := range lines {
		j := job{Key: key, Batch: rec.Batch.ID, Index: l.Index, CustomID: l.CustomID, URL: l.URL, Model: l.Model, Body: l.Body, KeyHash: rec.KeyHash, Header: hdr}
		f, err := b.js.PublishAsync(jobswire.LineSubject(l.Model, rec.Batch.ID), mustJSON(j),
			jetstream.WithMsgID(rec.Batch.ID+"."+strconv.Itoa(l.Index)))
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own types, which always marshal
	}
	return b
}

// record reads a batch record and its revision; nil when absent.
func (b *bus) record(ctx context.Context, key string) (*record, uint64, error) {
	e, err := b.batches.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, 0, fmt.Errorf("batch record %s: %w", key, err)
	}
	return &rec, e.Revision(), nil
}

// validBatchID reports whether id could be one of ours ("batch_" and
// hex), so that no client string reaches the bucket as a key.
func validBatchID(id string) bool {
	rest, ok := strings.CutPrefix(id, "batch_")
	if !ok || rest == "" || len(rest) > 64 {
		return false
	}
	for _, c := range rest {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// batchOf reads the caller's batch that the path names. When there is
// none, or the store fails, it answers the request itself and ok is
// false.
func (s *Service) batchOf(ctx context.Context, w http.ResponseWriter, r *http.Request) (b *bus, key string, rec *record, ok bool) {
	id, b, ok := s.begin(w, r)
	if !ok {
		return nil, "", nil, false
	}
	if !validBatchID(r.PathValue("id")) {
		s.fail(w, notFound("batch", r.PathValue("id")))
		return nil, "", nil, false
	}
	key = batchKey(owner(id), r.PathValue("id"))
	rec, _, err := b.record(ctx, key)
	if err != nil {
		s.fail(w, internal(err))
		return nil, "", nil, false
	}
	if rec == nil {
		s.fail(w, notFound("batch", r.PathValue("id")))
		return nil, "", nil, false
	}
	return b, key, rec, true
}

func (s *Service) getBatch(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	b, key, rec, ok := s.batchOf(ctx, w, r)
	if !ok {
		return
	}
	// A poll also repairs: it expires a batch past its window, and
	// finishes one whose every line has a result but whose finalizer
	// never ran or died.
	if !terminal(rec.Batch.Status) {
		if err := s.check(ctx, b, key, rec); err != nil {
			s.log.Warn("batch check", "batch", rec.Batch.ID, "err", err)
		}
		if cur, _, err := b.record(ctx, key); err == nil && cur != nil {
			rec = cur
		}
	}
	writeJSON(w, http.StatusOK, rec.Batch)
}

func (s *Service) cancelBatch(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	b, key, rec, ok := s.batchOf(ctx, w, r)
	if !ok {
		return
	}
	if terminal(rec.Batch.Status) || rec.Batch.Status == StatusFinalizing {
		e := llm.Errorf(http.StatusConflict, llm.TypeInvalidRequest, "", "Cannot cancel a batch with status '%s'.", rec.Batch.Status)
		e.Code = "batch_not_cancellable"
		s.fail(w, e)
		return
	}
	if err := s.finalize(ctx, b, key, StatusCancelled); err != nil {
		s.fail(w, internal(err))
		return
	}
	rec, _, err := b.record(ctx, key)
	if err != nil || rec == nil {
		s.fail(w, internal(fmt.Errorf("re-read batch %s: %v", key, err)))
		return
	}
	writeJSON(w, http.StatusOK, rec.Batch)
}

// listBatches is GET /v1/batches: the caller's batches, newest first,
// limit (1–100, default 20) after the batch ID in after.
func (s *Service) listBatches(w http.ResponseWriter, r *http.Request) {
	id, b, ok := s.begin(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			s.fail(w, invalid("limit", "limit must be a whole number from 1 to 100."))
			return
		}
		limit = n
	}
	after := q.Get("after")
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	prefix := batchKey(owner(id), "")
	kl, err := b.batches.ListKeysFiltered(ctx, prefix+"*")
	if err != nil {
		s.fail(w, internal(err))
		return
	}
	var ids []string
	for k := range kl.Keys() {
		ids = append(ids, strings.TrimPrefix(k, prefix))
	}
	kl.Stop()
	if ctx.Err() != nil {
		s.fail(w, internal(ctx.Err()))
		return
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	if after != "" {
		i := sort.Search(len(ids), func(i int) bool { return ids[i] < after })
		ids = ids[i:]
	}
	more := len(ids) > limit
	if more {
		ids = ids[:limit]
	}
	out := struct {
		Object  string  `json:"object"`
		Data    []Batch `json:"data"`
		FirstID *string `json:"first_id"`
		LastID  *string `json:"last_id"`
		HasMore bool    `json:"has_more"`
	}{Object: "list", Data: []Batch{}, HasMore: more}
	for _, bid := range ids {
		rec, _, err := b.record(ctx, prefix+bid)
		if err != nil {
			s.fail(w, internal(err))
			return
		}
		if rec != nil {
			out.Data = append(out.Data, rec.Batch)
		}
	}
	if n := len(out.Data); n > 0 {
		out.FirstID, out.LastID = &out.Data[0].ID, &out.Data[n-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

// listFiles is GET /v1/files: the caller's files, newest first (order
// "asc" for oldest first), only those of purpose when it is given, at
// most limit (1–10,000, default 10,000) after the file ID in after.
func (s *Service) listFiles(w http.ResponseWriter, r *http.Request) {
	id, b, ok := s.begin(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit := 10_000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10_000 {
			s.fail(w, invalid("limit", "limit must be a whole number from 1 to 10000."))
			return
		}
		limit = n
	}
	order := q.Get("order")
	if order != "" && order != "asc" && order != "desc" {
		s.fail(w, invalid("order", "order must be 'asc' or 'desc'."))
		return
	}
	purpose, after := q.Get("purpose"), q.Get("after")
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	infos, err := b.files.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		s.fail(w, internal(err))
		return
	}
	own := owner(id)
	var files []File
	for _, info := range infos {
		p := info.Metadata[metaPurpose]
		if info.Deleted || info.Metadata[metaOwner] != own || purpose != "" && p != purpose || purpose == "" && p == anthropicPurpose {
			continue
		}
		created, _ := strconv.ParseInt(info.Metadata[metaCreated], 10, 64)
		files = append(files, File{ID: info.Name, Object: "file", Bytes: int64(info.Size), CreatedAt: created,
			Filename: info.Metadata[metaFilename], Purpose: info.Metadata[metaPurpose], Status: "processed"})
	}
	// IDs begin with their creation time in hex: they sort by age,
	// and a page goes on after the ID it was given.
	sort.Slice(files, func(i, j int) bool {
		if order == "asc" {
			return files[i].ID < files[j].ID
		}
		return files[i].ID > files[j].ID
	})
	if after != "" {
		i := sort.Search(len(files), func(i int) bool {
			if order == "asc" {
				return files[i].ID > after
			}
			return files[i].ID < after
		})
		files = files[i:]
	}
	more := len(files) > limit
	if more {
		files = files[:limit]
	}
	out := struct {
		Object  string  `json:"object"`
		Data    []File  `json:"data"`
		FirstID *string `json:"first_id"`
		LastID  *string `json:"last_id"`
		HasMore bool    `json:"has_more"`
	}{Object: "list", Data: []File{}, HasMore: more}
	out.Data = append(out.Data, files...)
	if n := len(out.Data); n > 0 {
		out.FirstID, out.LastID = &out.Data[0].ID, &out.Data[n-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}
