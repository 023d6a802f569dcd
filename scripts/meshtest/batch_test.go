package meshtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-mesh/meridian/control/controltest"
	"github.com/meridian-mesh/meridian/edge/api"
	"github.com/meridian-mesh/meridian/edge/jobs"
	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

// batchWorker is the batch side of an edge: edge/jobs on its own
// connection to the control plane's NATS, answering every line itself.
type batchWorker struct {
	svc *jobs.Service
	nc  *nats.Conn
	url string
}

func startBatchWorker(t *testing.T, c *controltest.Cluster, served *atomic.Int64) *batchWorker {
	t.Helper()
	var urls []string
	for _, m := range c.Members {
		urls = append(urls, m.NATSURL())
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.Token(controltest.NATSToken),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := jobs.DefaultConfig()
	cfg.AckWait, cfg.Poll = 2*time.Second, 50*time.Millisecond
	cfg.Authenticate = func(*http.Request) (api.Identity, *llm.Error) { return api.Identity{TenantID: "open"}, nil }
	cfg.Run = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"chat.completion","echo":%d}`, len(body))
	})
	svc, err := jobs.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(nc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	select {
	case <-svc.Ready():
	case <-time.After(60 * time.Second):
		t.Fatal("the control plane never created the batch streams")
	}
	mux := http.NewServeMux()
	svc.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &batchWorker{svc: svc, nc: nc, url: srv.URL}
}

// TestBatchSurvivesEdgeAndControlNodeDeath: a batch on the three
// control nodes' JetStream (R3) completes with every line exactly once
// although one edge's connection dies mid-batch and one control node is
// killed.
func TestBatchSurvivesEdgeAndControlNodeDeath(t *testing.T) {
	c := controltest.Start(t, 3, controltest.Options{Distribution: true, ClusterNATS: true, Usage: true, Timers: 2})
	var servedA, servedB atomic.Int64
	a := startBatchWorker(t, c, &servedA)
	b := startBatchWorker(t, c, &servedB)

	const n = 300
	var in bytes.Buffer
	for i := range n {
		fmt.Fprintf(&in, `{"custom_id":"l-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m%d","messages":[]}}`+"\n", i, i%3)
	}
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	fw.Write(in.Bytes())
	mw.Close()
	// Streams just created with three replicas may still be electing
	// their leaders: the API then answers 500 batch_store_error, "retry
	// shortly", and a client retries, as the SDKs do.
	storeBusy := func(status int, body []byte) bool {
		return status == http.StatusInternalServerError && strings.Contains(string(body), "batch_store_error")
	}
	var f jobs.File
	wait.For(t, 60*time.Second, "the file to be stored", func() error {
		resp, err := http.Post(a.url+"/v1/files", mw.FormDataContentType(), bytes.NewReader(form.Bytes()))
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if storeBusy(resp.StatusCode, body) {
			return fmt.Errorf("upload: %d %s", resp.StatusCode, body)
		}
		if err := json.Unmarshal(body, &f); err != nil || resp.StatusCode != 200 {
			t.Fatalf("upload: %d %s", resp.StatusCode, body)
		}
		return nil
	})
	var batch jobs.Batch
	wait.For(t, 60*time.Second, "the batch to be created", func() error {
		resp, err := http.Post(a.url+"/v1/batches", "application/json",
			strings.NewReader(fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":"24h"}`, f.ID)))
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if storeBusy(resp.StatusCode, body) {
			return fmt.Errorf("create batch: %d %s", resp.StatusCode, body)
		}
		if err := json.Unmarshal(body, &batch); err != nil || batch.RequestCounts.Total != n {
			t.Fatalf("create batch: %d %s", resp.StatusCode, body)
		}
		return nil
	})
	get := func() (jobs.Batch, error) {
		resp, err := http.Get(a.url + "/v1/batches/" + batch.ID)
		if err != nil {
			return jobs.Batch{}, err
		}
		defer resp.Body.Close()
		var cur jobs.Batch
		if resp.StatusCode != 200 {
			return cur, fmt.Errorf("GET batch: %d", resp.StatusCode)
		}
		return cur, json.NewDecoder(resp.Body).Decode(&cur)
	}
	wait.For(t, 60*time.Second, "both workers under way", func() error {
		if servedA.Load() < 10 || servedB.Load() < 10 {
			return fmt.Errorf("served %d and %d lines", servedA.Load(), servedB.Load())
		}
		return nil
	})
	b.nc.Close() // one edge dies mid-batch
	c.Followers()[0].Kill()
	var done jobs.Batch
	wait.For(t, 120*time.Second, "the batch to complete", func() error {
		cur, err := get()
		if err != nil {
			return err
		}
		if done = cur; cur.Status != jobs.StatusCompleted {
			return fmt.Errorf("status %s, %+v", cur.Status, cur.RequestCounts)
		}
		return nil
	})
	if done.RequestCounts != (jobs.Counts{Total: n, Completed: n}) || done.OutputFileID == nil {
		t.Fatalf("completed batch: %+v", done)
	}
	resp, err := http.Get(a.url + "/v1/files/" + *done.OutputFileID + "/content")
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	seen := map[string]int{}
	for _, l := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var ol jobs.OutputLine
		if err := json.Unmarshal(l, &ol); err != nil || ol.Response == nil || ol.Response.StatusCode != 200 {
			t.Fatalf("output line %s: %v", l, err)
		}
		seen[ol.CustomID]++
	}
	for i := range n {
		if c := seen[fmt.Sprintf("l-%d", i)]; c != 1 {
			t.Errorf("l-%d is in the output %d times", i, c)
		}
	}
}
