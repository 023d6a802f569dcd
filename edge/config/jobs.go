package config

import (
	"fmt"
	"time"

	"github.com/meridian-mesh/meridian/shared/table"
)

// Jobs configures the edge's batch workers and webhook deliverer
// (edge/jobs). They run only when the edge follows a control plane with
// JetStream.
type Jobs struct {
	// Workers is how many batch lines or async requests this edge runs
	// at once. Default 2.
	Workers int `yaml:"workers"`
	// AckWait is how long a line may run without a sign of life before
	// JetStream hands it to another edge; a running line extends it
	// every AckWait/3. Default 30s.
	AckWait time.Duration `yaml:"ack_wait"`
	// MaxDeliver bounds how often a line is handed out before its last
	// answer is stored, even a retryable error. Default 5.
	MaxDeliver int `yaml:"max_deliver"`
	// WebhookTimeout bounds one webhook call. Default 10s.
	WebhookTimeout time.Duration `yaml:"webhook_timeout"`
	// WebhookRetryFor is how long a webhook event is retried before it
	// becomes a dead letter. Default 24h.
	WebhookRetryFor time.Duration `yaml:"webhook_retry_for"`
}

// DefaultJobs returns the job settings used where nothing is set.
func DefaultJobs() Jobs {
	return Jobs{Workers: 2, AckWait: 30 * time.Second, MaxDeliver: 5, WebhookTimeout: 10 * time.Second, WebhookRetryFor: 24 * time.Hour}
}

func (j *Jobs) validate() error {
	bad := func(field, format string, args ...any) error {
		return &table.FieldError{Field: "jobs." + field, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case j.Workers < 1 || j.Workers > 1024:
		return bad("workers", "must be between 1 and 1024, got %d", j.Workers)
	case j.AckWait < time.Second || j.AckWait > time.Hour:
		return bad("ack_wait", "must be between 1s and 1h, got %v", j.AckWait)
	case j.MaxDeliver < 1 || j.MaxDeliver > 100:
		return bad("max_deliver", "must be between 1 and 100, got %d", j.MaxDeliver)
	case j.WebhookTimeout < 100*time.Millisecond || j.WebhookTimeout > 5*time.Minute:
		return bad("webhook_timeout", "must be between 100ms and 5m, got %v", j.WebhookTimeout)
	case j.WebhookRetryFor < time.Second || j.WebhookRetryFor > 7*24*time.Hour:
		return bad("webhook_retry_for", "must be between 1s and 7 days, got %v", j.WebhookRetryFor)
	}
	return nil
}
