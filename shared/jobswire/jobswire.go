// Package jobswire is what edges and control nodes agree on about async
// jobs (OpenAI batches): the JetStream work-queue stream that holds the
// lines waiting to run, the object store that holds uploaded files and
// finished output files, the key-value buckets that hold batch records
// and per-line results, and the subjects and consumer names lines are
// filed under.
//
// Control nodes create the streams (Ensure) with their replica count;
// edges only use them, within the subject permissions control/natsd
// grants (it must never let an edge create, delete or reconfigure them).
package jobswire

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream is the work-queue stream of batch lines (a line is removed when
// a worker acknowledges it, after its result is stored) and of webhook
// events (removed once delivered, or dead-lettered).
const Stream = "MERIDIAN_JOBS"

// LinesPrefix begins every line's subject.
const LinesPrefix = "meridian.v1.jobs.lines"

// LinesSubjects is the subject filter of every line.
const LinesSubjects = LinesPrefix + ".>"

// HooksPrefix begins every webhook event's subject: the events of async
// jobs waiting to be delivered to their callback URLs share the work
// stream, so a delivery survives the edge that emitted it.
const HooksPrefix = "meridian.v1.jobs.hooks"

// HooksSubjects is the subject filter of every webhook event.
const HooksSubjects = HooksPrefix + ".>"

// HookSubject is the subject owner's webhook events are published on.
func HookSubject(owner string) string { return HooksPrefix + "." + Token(owner) }

// HooksConsumer is the durable pull consumer of webhook events, shared
// by every edge; its filter (HooksSubjects) overlaps no line consumer's.
const HooksConsumer = "webhooks"

// Files is the object store bucket of uploaded input files and of
// batches' output and error files.
const Files = "MERIDIAN_FILES"

// Batches is the key-value bucket of batch records and file records.
const Batches = "MERIDIAN_BATCHES"

// Results is the key-value bucket of finished lines, one key per batch
// and custom_id, written once (kv.Create): a redelivered line finds its
// key taken and is only acknowledged.
const Results = "MERIDIAN_RESULTS"

// ResultsTTL is how long a line's result is kept: longer than any
// batch's completion window, so a line redelivered late still finds
// its result and is not run again.
const ResultsTTL = 8 * 24 * time.Hour

// DuplicateWindow is how long the work stream remembers a line's message
// ID, so a batch whose lines were published twice runs each once.
const DuplicateWindow = 10 * time.Minute

// MaxLineBytes bounds one line's message: the stream refuses larger.
const MaxLineBytes = 1 << 20

// Token turns any string (a model ID, a custom_id) into one subject
// token and key-value key part: the first 16 bytes of its SHA-256 in
// hex, so IDs with dots, slashes or colons never split or escape a
// subject.
func Token(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// LineSubject is the subject a batch's line for model is published on:
// one consumer per model reads LinesPrefix.<model>.*, so workers can pull
// the models they hold locally first, and a cancelled batch's lines are
// purged by LinesPrefix.*.<batch>.
func LineSubject(model, batch string) string {
	return LinesPrefix + "." + Token(model) + "." + batch
}

// ModelFilter is the filter subject of model's consumer.
func ModelFilter(model string) string { return LinesPrefix + "." + Token(model) + ".*" }

// BatchFilter matches every line of batch, whatever its model.
func BatchFilter(batch string) string { return LinesPrefix + ".*." + batch }

// ConsumerName is the durable pull consumer of model's lines, shared by
// every worker in the fleet. Work-queue streams need consumers whose
// filters do not overlap: one per model does not.
func ConsumerName(model string) string { return "lines_" + Token(model) }

// ConsumerModelKey is the consumer metadata key that names its model.
const ConsumerModelKey = "model"

// StreamConfig is the work-queue stream, fsynced like every stream of
// the embedded server, with replicas copies.
func StreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name: Stream, Description: "Meridian batch lines waiting to run",
		Subjects: []string{LinesSubjects, HooksSubjects}, Storage: jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy, Replicas: replicas,
		Duplicates: DuplicateWindow, MaxMsgSize: MaxLineBytes, Discard: jetstream.DiscardNew,
	}
}

// FilesConfig is the object store of files.
func FilesConfig(replicas int) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{Bucket: Files, Description: "Meridian batch input and output files",
		Storage: jetstream.FileStorage, Replicas: replicas}
}

// BatchesConfig is the bucket of batch and file records; History 1
// because updates are compare-and-set on the latest revision.
func BatchesConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: Batches, Description: "Meridian batch records",
		Storage: jetstream.FileStorage, Replicas: replicas, History: 1}
}

// ResultsConfig is the bucket of finished lines.
func ResultsConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{Bucket: Results, Description: "Meridian batch line results",
		Storage: jetstream.FileStorage, Replicas: replicas, History: 1, TTL: ResultsTTL}
}

// Ensure creates (or brings up to date) the work stream, the object
// store and both buckets with replicas copies each. It is idempotent.
func Ensure(ctx context.Context, js jetstream.JetStream, replicas int) error {
	if replicas < 1 {
		return errors.New("jobswire: replicas must be at least 1")
	}
	if _, err := js.CreateOrUpdateStream(ctx, StreamConfig(replicas)); err != nil {
		return fmt.Errorf("jobswire: stream %s: %w", Stream, err)
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, FilesConfig(replicas)); err != nil {
		return fmt.Errorf("jobswire: object store %s: %w", Files, err)
	}
	for _, c := range []jetstream.KeyValueConfig{BatchesConfig(replicas), ResultsConfig(replicas)} {
		if _, err := js.CreateOrUpdateKeyValue(ctx, c); err != nil {
			return fmt.Errorf("jobswire: bucket %s: %w", c.Bucket, err)
		}
	}
	return nil
}
