package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/meridian-mesh/meridian/shared/jobswire"
	"github.com/nats-io/nats.go/jetstream"
)

// check moves a batch on if it is due: expired past its window,
// completed when every line has a result, or finished by whoever comes
// along when its finalizer's claim went stale.
func (s *Service) check(ctx context.Context, b *bus, key string, rec *record) error {
	now := s.now()
	switch rec.Batch.Status {
	case StatusValidating, StatusInProgress:
		if now.UnixNano() > rec.Deadline {
			return s.finalize(ctx, b, key, StatusExpired)
		}
		if rec.Batch.Status == StatusValidating {
			return nil // still being enqueued
		}
		n, err := b.stored(ctx, rec.Batch.ID)
		if err != nil {
			return err
		}
		if n >= rec.Batch.RequestCounts.Total {
			return s.finalize(ctx, b, key, StatusCompleted)
		}
	case StatusFinalizing, StatusCancelling:
		if now.Sub(time.Unix(0, rec.Claimed)) > staleClaim {
			return s.finalize(ctx, b, key, rec.Final)
		}
	}
	return nil
}

// stored counts the results stored for batch, exactly: the subjects
// under the batch's prefix in the results bucket's stream.
func (b *bus) stored(ctx context.Context, batch string) (int, error) {
	st, err := b.js.Stream(ctx, "KV_"+jobswire.Results)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("$KV."+jobswire.Results+"."+batch+".>"))
	if err != nil {
		return 0, err
	}
	return len(info.State.Subjects), nil
}

// finalize takes the batch (a compare-and-set to finalizing, or
// cancelling) and brings it to status final: completed, expired or
// cancelled. Expired and cancelled batches lose the lines still
// queued. It writes the output and error files from the stored results
// and sets the exact counts. Whoever loses the compare-and-set leaves
// it to the winner; a winner that dies leaves a claim another caller of
// check takes over after staleClaim.
func (s *Service) finalize(ctx context.Context, b *bus, key, final string) error {
	var rec *record
	for claimed := false; !claimed; {
		cur, rev, err := b.record(ctx, key)
		if err != nil {
			return err
		}
		if cur == nil || terminal(cur.Batch.Status) {
			return nil
		}
		st := cur.Batch.Status
		if (st == StatusFinalizing || st == StatusCancelling) && s.now().Sub(time.Unix(0, cur.Claimed)) <= staleClaim {
			return nil // someone else is finishing it
		}
		if st == StatusFinalizing || st == StatusCancelling {
			final = cur.Final // take over the stale claim as it was
		}
		at := s.now().Unix()
		if final == StatusCancelled {
			cur.Batch.Status = StatusCancelling
			if cur.Batch.CancellingAt == nil {
				cur.Batch.CancellingAt = &at
			}
		} else {
			cur.Batch.Status = StatusFinalizing
			if cur.Batch.FinalizingAt == nil {
				cur.Batch.FinalizingAt = &at
			}
		}
		cur.Claimed, cur.Final = s.now().UnixNano(), final
		if _, err := b.batches.Update(ctx, key, mustJSON(cur), rev); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		rec, claimed = cur, true
	}
	id := rec.Batch.ID
	if final != StatusCompleted {
		if err := b.stream.Purge(ctx, jetstream.WithPurgeSubject(jobswire.BatchFilter(id))); err != nil {
			return fmt.Errorf("purging lines: %w", err)
		}
	}
	results, err := b.collect(ctx, id)
	if err != nil {
		return err
	}
	var outLines, errLines []result
	done := map[int]bool{}
	counts := Counts{Total: rec.Batch.RequestCounts.Total}
	for _, r := range results {
		done[r.Index] = true
		if r.OK {
			outLines, counts.Completed = append(outLines, r), counts.Completed+1
		} else {
			errLines, counts.Failed = append(errLines, r), counts.Failed+1
		}
	}
	if final == StatusExpired && rec.Kind == "" {
		expired, err := s.expiredLines(ctx, b, rec, done)
		if err != nil {
			return err
		}
		errLines = append(errLines, expired...)
	}
	for _, set := range [][]result{outLines, errLines} {
		sort.Slice(set, func(i, j int) bool { return set[i].Index < set[j].Index })
	}
	var outID, errID *string
	var response *LineResult
	event, data := "batch."+final, any(map[string]string{"id": id})
	if rec.Kind == kindJob {
		// A job keeps its one answer in its record, not in files.
		event = "job." + final
		for _, set := range [][]result{outLines, errLines} {
			for _, r := range set {
				var ol OutputLine
				if json.Unmarshal(r.Line, &ol) == nil && ol.Response != nil {
					response = ol.Response
				}
			}
		}
		jd := map[string]any{"id": id}
		if response != nil {
			jd["status_code"] = response.StatusCode
		}
		data = jd
		outLines, errLines = nil, nil
	}
	if len(outLines) > 0 {
		fid := "file-" + jobswire.Token(id+"/output")
		if err := b.putResultFile(ctx, fid, rec.Owner, id+"_output.jsonl", outLines, s.now()); err != nil {
			return err
		}
		outID = &fid
	}
	if len(errLines) > 0 {
		fid := "file-" + jobswire.Token(id+"/error")
		if err := b.putResultFile(ctx, fid, rec.Owner, id+"_error.jsonl", errLines, s.now()); err != nil {
			return err
		}
		errID = &fid
	}
	// The event goes out before the record turns terminal: a finalizer
	// that dies in between leaves a stale claim, and whoever takes it
	// over publishes the same event again (one message ID: delivered
	// once).
	if err := s.emit(ctx, b, rec, id, event, data); err != nil {
		return err
	}
	for {
		cur, rev, err := b.record(ctx, key)
		if err != nil {
			return err
		}
		if cur == nil || terminal(cur.Batch.Status) {
			return nil
		}
		at := s.now().Unix()
		cur.Batch.Status, cur.Batch.RequestCounts = final, counts
		cur.Batch.OutputFileID, cur.Batch.ErrorFileID = outID, errID
		cur.Response = response
		switch final {
		case StatusCompleted:
			cur.Batch.CompletedAt = &at
		case StatusExpired:
			cur.Batch.ExpiredAt = &at
		case StatusCancelled:
			cur.Batch.CancelledAt = &at
		}
		if _, err := b.batches.Update(ctx, key, mustJSON(cur), rev); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		return nil
	}
}

// collect reads every stored result of batch.
func (b *bus) collect(ctx context.Context, batch string) ([]result, error) {
	w, err := b.results.WatchFiltered(ctx, []string{batch + ".>"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	var out []result
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("results watch closed")
			}
			if e == nil {
				return out, nil // the initial values are all delivered
			}
			var r result
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				return nil, fmt.Errorf("result %s: %w", e.Key(), err)
			}
			out = append(out, r)
		}
	}
}

// expiredLines are error-file lines for the input lines without a
// result, as OpenAI writes them for an expired batch.
func (s *Service) expiredLines(ctx context.Context, b *bus, rec *record, done map[int]bool) ([]result, error) {
	data, err := b.files.GetBytes(ctx, rec.Batch.InputFileID)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil // deleted since: the lines never run cannot be named
	}
	if err != nil {
		return nil, fmt.Errorf("input file: %w", err)
	}
	lines, lerr := ParseFile(data, s.cfg.MaxLines)
	if lerr != nil {
		return nil, lerr
	}
	var out []result
	for _, l := range lines {
		if done[l.Index] {
			continue
		}
		ol := OutputLine{ID: requestID(rec.Batch.ID, l.CustomID), CustomID: l.CustomID,
			Error: &OutputError{Code: "batch_expired", Message: "This request could not be executed before the completion window expired."}}
		out = append(out, result{Index: l.Index, Line: mustJSON(ol)})
	}
	return out, nil
}

func (b *bus) putResultFile(ctx context.Context, fid, own, name string, lines []result, now time.Time) error {
	var buf bytes.Buffer
	for _, l := range lines {
		buf.Write(l.Line)
		buf.WriteByte('\n')
	}
	f := File{ID: fid, Bytes: int64(buf.Len()), CreatedAt: now.Unix(), Filename: name, Purpose: "batch_output"}
	return b.putFile(ctx, f, own, buf.Bytes())
}
