package node

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/control/fsm"
	"github.com/meridian-mesh/meridian/control/natsd"
	"github.com/meridian-mesh/meridian/edge/config"
	controlv1 "github.com/meridian-mesh/meridian/proto/control/v1"
	"github.com/meridian-mesh/meridian/shared/jobswire"
	"github.com/nats-io/nats.go/jetstream"
)

// startBatchMesh is an edge following a control plane whose NATS runs
// JetStream with the batch streams, serving "batch-model" from the mock
// provider.
func startBatchMesh(t *testing.T) *testMesh {
	t.Helper()
	t.Setenv("MERIDIAN_SECRET_TEST_MOCK_KEY", mockKey)
	fc := startFakeControl(t, func(c *natsd.Config) { c.StoreDir = t.TempDir() })
	js, err := jetstream.New(fc.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := jobswire.Ensure(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	written := false
	m := startMesh(t, func(c *config.Config) {
		if !written {
			written = true
			fc.write(t,
				fsm.PutOp(&controlv1.Provider{Id: "ctl-mock", Kind: "openai", BaseUrl: c.Table.Providers[0].BaseURL, SecretRef: "env:MERIDIAN_SECRET_TEST_MOCK_KEY"}),
				fsm.PutOp(&controlv1.Model{Id: "batch-model"}),
				fsm.PutOp(&controlv1.Route{Model: "batch-model", Targets: []*controlv1.Target{{Provider: "ctl-mock", Model: "gpt-4o-mini"}}}))
		}
		c.Control.NATSURLs, c.Control.TablePublicKey = []string{fc.url}, fc.key
		c.Control.Token = testNATSToken
		c.Control.TableCache = filepath.Join(t.TempDir(), "table.pb")
		c.Auth = config.AuthNone // its table lists no keys
	})
	m.waitFor("the control plane's table", func() bool {
		_, body := get(t, m.url+"/v1/models")
		return strings.Contains(body, "batch-model")
	})
	return m
}

// TestNodeSDKBatch runs a 1,000-line batch through the official OpenAI
// Node SDK: files.create, batches.create, batches.retrieve until
// completed, files.content; and a 50-request message batch through the
// Anthropic SDK: messages.batches.create, retrieve, results, list. Outside CI it skips when Node or the
// packages are missing.
func TestNodeSDKBatch(t *testing.T) {
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(nodeSDKDir, "node_modules", "openai"))
	}
	if err != nil {
		msg := "the Node SDK tests need node and `npm ci` in scripts/sdktest/node: " + err.Error()
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	m := startBatchMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "batch.test.mjs")
	cmd.Dir = nodeSDKDir
	cmd.Env = append(os.Environ(), "MERIDIAN_BATCH_URL="+m.url, "MERIDIAN_BATCH_MODEL=batch-model", "MERIDIAN_BATCH_LINES=1000")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "fail 0") || !strings.Contains(string(out), "pass 2") {
		t.Fatalf("node --test reported failures or skips:\n%s", out)
	}
	t.Logf("%s", out)
}

// Without a control plane the batch APIs answer 503 in OpenAI's format.
func TestBatchesNeedControlPlane(t *testing.T) {
	m := startMesh(t, nil)
	resp := m.post("/v1/batches", `{"input_file_id":"file-x","endpoint":"/v1/chat/completions","completion_window":"24h"}`)
	body := string(readBody(t, resp))
	if resp.StatusCode != 503 || !strings.Contains(body, `"batches_unavailable"`) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

// An async request through the node's own handler: 202 with a job, and
// the answer in OpenAI's format once it ran.
func TestNodeAsyncRequest(t *testing.T) {
	m := startBatchMesh(t)
	req, _ := http.NewRequest("POST", m.url+"/v1/chat/completions", strings.NewReader(`{"model":"batch-model","messages":[{"role":"user","content":"later #mock chunks=2"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Prefer", "respond-async")
	var resp *http.Response
	var body string
	m.waitFor("the jobs service to bind", func() bool {
		r, err := http.DefaultClient.Do(req.Clone(context.Background()))
		if err != nil {
			return false
		}
		req.Body, _ = req.GetBody()
		resp, body = r, string(readBody(t, r))
		return r.StatusCode != 503
	})
	if resp.StatusCode != 202 || resp.Header.Get("Preference-Applied") != "respond-async" {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, body)
	}
	var job struct {
		ID, Status string
		StatusCode int             `json:"status_code"`
		Result     json.RawMessage `json:"result"`
	}
	json.Unmarshal([]byte(body), &job)
	m.waitFor("the job to complete", func() bool {
		_, b := get(t, m.url+"/v1/meridian/jobs/"+job.ID)
		json.Unmarshal([]byte(b), &job)
		return job.Status == "completed"
	})
	if job.StatusCode != 200 || !strings.Contains(string(job.Result), `"chat.completion"`) {
		t.Fatalf("job: %+v %s", job, job.Result)
	}
}
