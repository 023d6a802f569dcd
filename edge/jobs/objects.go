package jobs

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/shared/jobswire"
)

// File is OpenAI's file object.
type File struct {
	ID            string  `json:"id"`
	Object        string  `json:"object"`
	Bytes         int64   `json:"bytes"`
	CreatedAt     int64   `json:"created_at"`
	ExpiresAt     *int64  `json:"expires_at"`
	Filename      string  `json:"filename"`
	Purpose       string  `json:"purpose"`
	Status        string  `json:"status"`
	StatusDetails *string `json:"status_details"`
}

// Object metadata keys of a stored file.
const (
	metaOwner    = "owner"
	metaPurpose  = "purpose"
	metaFilename = "filename"
	metaCreated  = "created_at"
)

// Counts is a batch's request_counts.
type Counts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// BatchError is one entry of a batch's errors list.
type BatchError struct {
	Code    string  `json:"code"`
	Message string  `json:"message"`
	Param   *string `json:"param"`
	Line    *int    `json:"line"`
}

// BatchErrors is a batch's errors object.
type BatchErrors struct {
	Object string       `json:"object"`
	Data   []BatchError `json:"data"`
}

// Batch is OpenAI's batch object.
type Batch struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	Errors           *BatchErrors      `json:"errors"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	OutputFileID     *string           `json:"output_file_id"`
	ErrorFileID      *string           `json:"error_file_id"`
	CreatedAt        int64             `json:"created_at"`
	InProgressAt     *int64            `json:"in_progress_at"`
	ExpiresAt        *int64            `json:"expires_at"`
	FinalizingAt     *int64            `json:"finalizing_at"`
	CompletedAt      *int64            `json:"completed_at"`
	FailedAt         *int64            `json:"failed_at"`
	ExpiredAt        *int64            `json:"expired_at"`
	CancellingAt     *int64            `json:"cancelling_at"`
	CancelledAt      *int64            `json:"cancelled_at"`
	RequestCounts    Counts            `json:"request_counts"`
	Metadata         map[string]string `json:"metadata"`
}

// Batch statuses, as OpenAI names them.
const (
	StatusValidating = "validating"
	StatusFailed     = "failed"
	StatusInProgress = "in_progress"
	StatusFinalizing = "finalizing"
	StatusCompleted  = "completed"
	StatusExpired    = "expired"
	StatusCancelling = "cancelling"
	StatusCancelled  = "cancelled"
)

func terminal(status string) bool {
	switch status {
	case StatusFailed, StatusCompleted, StatusExpired, StatusCancelled:
		return true
	}
	return false
}

// record is what the batches bucket holds: the batch as clients see it
// and what only the edges need.
type record struct {
	Batch Batch `json:"batch"`
	// Owner is the tenant (or "key:<id>") the batch belongs to.
	Owner string `json:"owner"`
	// KeyHash is the creating key's table hash; lines run as that key.
	KeyHash string `json:"key_hash,omitempty"`
	// Deadline is expires_at in Unix nanoseconds.
	Deadline int64 `json:"deadline"`
	// Claimed is when the current finalizer took the batch, Unix
	// nanoseconds; a claim older than staleClaim may be taken over.
	Claimed int64 `json:"claimed,omitempty"`
	// Final is the status the finalizer is heading for.
	Final string `json:"final,omitempty"`
	// Kind is "" for a batch, kindJob for an async request.
	Kind string `json:"kind,omitempty"`
	// Model is an async request's model.
	Model string `json:"model,omitempty"`
	// Response is an async request's answer, once it has one.
	Response *LineResult `json:"response,omitempty"`
	// Tenant is the creating key's tenant, whose webhook policy applies.
	Tenant string `json:"tenant,omitempty"`
	// WebhookURL is the callback the batch's final event is sent to;
	// empty means none.
	WebhookURL string `json:"webhook_url,omitempty"`
}

// kindJob marks an async request's record.
const kindJob = "job"

// staleClaim is how long a finalizer may hold a batch before another
// takes it over, having presumably died.
const staleClaim = time.Minute

// job is one line on the work stream.
type job struct {
	Key      string          `json:"key"` // the batch record's key
	Batch    string          `json:"batch"`
	Index    int             `json:"i"`
	CustomID string          `json:"custom_id"`
	URL      string          `json:"url"`
	Model    string          `json:"model"`
	Body     json.RawMessage `json:"body"`
	KeyHash  string          `json:"key_hash,omitempty"`
	// Header holds the request headers the line runs with
	// (forwardedHeaders, or an Anthropic batch's version).
	Header map[string]string `json:"header,omitempty"`
}

// result is what the results bucket holds for a finished line.
type result struct {
	Index int  `json:"i"`
	OK    bool `json:"ok"`
	// Line is the output- or error-file line, as written.
	Line json.RawMessage `json:"line"`
}

// OutputLine is one line of an output or error file.
type OutputLine struct {
	ID       string       `json:"id"`
	CustomID string       `json:"custom_id"`
	Response *LineResult  `json:"response"`
	Error    *OutputError `json:"error"`
}

// LineResult is an output line's response.
type LineResult struct {
	StatusCode int             `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

// OutputError is an error-file line's error, for lines that got no
// response at all (expired).
type OutputError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// owner names who an identity's objects belong to: its tenant, else
// its key, else nobody in particular (auth mode "none").
func owner(id api.Identity) string {
	switch {
	case id.TenantID != "":
		return id.TenantID
	case id.KeyID != "":
		return "key:" + id.KeyID
	}
	return ""
}

func keyHash(id api.Identity) string {
	if id.Key != nil {
		return id.Key.Hash
	}
	return ""
}

// batchKey is a batch record's key: by owner, so a tenant lists only
// its own.
func batchKey(owner, id string) string { return "b." + jobswire.Token(owner) + "." + id }

// resultKey is a line's result key.
func resultKey(batch, customID string) string { return batch + "." + jobswire.Token(customID) }

// requestID is the request ID a line runs under: the same on every
// delivery, so a usage record is counted once however often it ran.
func requestID(batch, customID string) string {
	return "batch_req_" + jobswire.Token(batch+"\x00"+customID)
}

// newID returns prefix followed by the time in hex and random bytes, so
// that IDs sort by creation time.
func newID(prefix string, now time.Time) string {
	var b [6]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s%016x%s", prefix, now.UnixNano(), hex.EncodeToString(b[:]))
}
