package jobs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meridian-mesh/meridian/shared/testkit/wait"
)

func messageRequests(n int, content func(i int) string) string {
	var reqs []string
	for i := range n {
		reqs = append(reqs, fmt.Sprintf(`{"custom_id":"r-%d","params":{"model":"m1","max_tokens":8,"messages":[{"role":"user","content":%q}]}}`, i, content(i)))
	}
	return `{"requests":[` + strings.Join(reqs, ",") + `]}`
}

func TestMessageBatches(t *testing.T) {
	ns := startBus(t)
	release := make(chan struct{})
	defer close(release)
	gw := &fakeGateway{
		fail: func(body []byte, n int) int {
			if bytes.Contains(body, []byte(`"bad"`)) {
				return 400
			}
			return 0
		},
		block: func(body []byte) <-chan struct{} {
			if bytes.Contains(body, []byte(`"slow"`)) {
				return release
			}
			return nil
		},
	}
	e := startEdge(t, ns, gw, nil)
	get := func(tenant, path string) MessageBatch {
		code, body := e.do(t, tenant, "GET", path, nil, "")
		if code != 200 {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		return decode[MessageBatch](t, body)
	}
	code, body := e.do(t, "acme", "POST", "/v1/messages/batches", strings.NewReader(messageRequests(5, func(i int) string {
		if i == 3 {
			return "bad"
		}
		return fmt.Sprintf("m %d", i)
	})), "application/json")
	if code != 200 {
		t.Fatalf("create: %d %s", code, body)
	}
	mb := decode[MessageBatch](t, body)
	if !strings.HasPrefix(mb.ID, "msgbatch_") || mb.Type != "message_batch" || mb.ProcessingStatus != "in_progress" || mb.ResultsURL != nil {
		t.Fatalf("created: %s", body)
	}
	wait.For(t, 60*time.Second, "the message batch to end", func() error {
		if mb = get("acme", "/v1/messages/batches/"+mb.ID); mb.ProcessingStatus != "ended" {
			return fmt.Errorf("%s %+v", mb.ProcessingStatus, mb.RequestCounts)
		}
		return nil
	})
	if mb.RequestCounts != (MessageCounts{Succeeded: 4, Errored: 1}) || mb.EndedAt == nil || mb.ResultsURL == nil ||
		*mb.ResultsURL != e.srv.URL+"/v1/messages/batches/"+mb.ID+"/results" {
		t.Fatalf("ended: %+v", mb)
	}
	code, body = e.do(t, "acme", "GET", "/v1/messages/batches/"+mb.ID+"/results", nil, "")
	if code != 200 {
		t.Fatalf("results: %d %s", code, body)
	}
	lines := bytes.Split(bytes.TrimSpace(body), []byte("\n"))
	if len(lines) != 5 {
		t.Fatalf("%d result lines: %s", len(lines), body)
	}
	for i, l := range lines {
		mr := decode[messageResult](t, l)
		want := "succeeded"
		if i == 3 {
			want = "errored"
		}
		if mr.CustomID != fmt.Sprintf("r-%d", i) || mr.Result.Type != want {
			t.Fatalf("line %d: %s", i, l)
		}
		if want == "succeeded" && !bytes.Contains(mr.Result.Message, []byte(fmt.Sprintf("echo m %d", i))) {
			t.Fatalf("line %d: %s", i, l)
		}
		var er struct{ Type string }
		if want == "errored" && (json.Unmarshal(mr.Result.Error, &er) != nil || er.Type != "error") {
			t.Fatalf("errored line: %s", l)
		}
	}
	gw.mu.Lock()
	av := gw.hdr["Anthropic-Version"]
	gw.mu.Unlock()
	if av != anthropicVersion {
		t.Fatalf("lines ran with anthropic-version %q", av)
	}

	// Cancelled mid-batch: the requests never run are canceled.
	code, body = e.do(t, "acme", "POST", "/v1/messages/batches", strings.NewReader(messageRequests(3, func(int) string { return "slow" })), "application/json")
	if code != 200 {
		t.Fatalf("create: %d %s", code, body)
	}
	slow := decode[MessageBatch](t, body)
	code, body = e.do(t, "acme", "POST", "/v1/messages/batches/"+slow.ID+"/cancel", nil, "")
	if c := decode[MessageBatch](t, body); code != 200 || c.ProcessingStatus != "ended" || c.RequestCounts.Canceled != 3 {
		t.Fatalf("cancel: %d %s", code, body)
	}
	_, body = e.do(t, "acme", "GET", "/v1/messages/batches/"+slow.ID+"/results", nil, "")
	if n := bytes.Count(body, []byte(`"type":"canceled"`)); n != 3 {
		t.Fatalf("results of the cancelled batch: %s", body)
	}

	// Listing, newest first; other tenants and OpenAI's batch list see
	// nothing; errors in Anthropic's shape.
	code, body = e.do(t, "acme", "GET", "/v1/messages/batches?limit=1", nil, "")
	l := decode[struct {
		Data    []MessageBatch
		HasMore bool   `json:"has_more"`
		LastID  string `json:"last_id"`
	}](t, body)
	if code != 200 || len(l.Data) != 1 || l.Data[0].ID != slow.ID || !l.HasMore {
		t.Fatalf("list: %d %s", code, body)
	}
	_, body = e.do(t, "acme", "GET", "/v1/messages/batches?after_id="+l.LastID, nil, "")
	if !bytes.Contains(body, []byte(mb.ID)) || bytes.Contains(body, []byte(slow.ID)) {
		t.Fatalf("second page: %s", body)
	}
	if _, body := e.do(t, "acme", "GET", "/v1/batches", nil, ""); bytes.Contains(body, []byte("msgbatch_")) {
		t.Fatalf("OpenAI's list shows a message batch: %s", body)
	}
	code, body = e.do(t, "other", "GET", "/v1/messages/batches/"+mb.ID, nil, "")
	if code != 404 || !bytes.Contains(body, []byte(`"type":"error"`)) || !bytes.Contains(body, []byte("not_found_error")) {
		t.Fatalf("another tenant: %d %s", code, body)
	}
	for _, bad := range []string{`{"requests":[]}`, `{"requests":[{"custom_id":"a b","params":{"model":"m1"}}]}`,
		`{"requests":[{"custom_id":"a","params":{"model":"m1"}},{"custom_id":"a","params":{"model":"m1"}}]}`,
		`{"requests":[{"custom_id":"a","params":{"model":"m1","stream":true}}]}`, `not json`} {
		code, body := e.do(t, "acme", "POST", "/v1/messages/batches", strings.NewReader(bad), "application/json")
		if code != 400 || !bytes.Contains(body, []byte(`"invalid_request_error"`)) || !bytes.Contains(body, []byte(`"type":"error"`)) {
			t.Fatalf("%s: %d %s", bad, code, body)
		}
	}
}

// FuzzParseMessageRequests: a message batch body is refused with a 400
// or gives one line per request, each with a valid unique custom_id, a
// model and an object body, whose input file parses back line by line.
func FuzzParseMessageRequests(f *testing.F) {
	for _, s := range []string{
		`{"requests":[{"custom_id":"a","params":{"model":"m","max_tokens":1,"messages":[]}}]}`,
		`{"requests":[{"custom_id":"a","params":{"model":"m"}},{"custom_id":"a","params":{"model":"m"}}]}`,
		`{"requests":[{"custom_id":"a","params":{"model":"m","stream":true}}]}`,
		`{"requests":[{"custom_id":"a b","params":{}}]}`, `{"requests":[]}`, `{"requests":null}`, `[`, `{"requests":[{"params":"x"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		lines, file, err := ParseMessageRequests(b, 100)
		if err != nil {
			if err.Status != 400 || err.Message == "" {
				t.Fatalf("%q: %+v", b, err)
			}
			return
		}
		seen := map[string]bool{}
		rows := bytes.Split(bytes.TrimSuffix(file, []byte("\n")), []byte("\n"))
		if len(lines) == 0 || len(lines) > 100 || len(rows) != len(lines) {
			t.Fatalf("%q: %d lines, %d file rows", b, len(lines), len(rows))
		}
		for i, l := range lines {
			if seen[l.CustomID] || !anthropicCustomID.MatchString(l.CustomID) || l.Model == "" || l.Index != i || l.URL != "/v1/messages" {
				t.Fatalf("%q: line %+v", b, l)
			}
			seen[l.CustomID] = true
			var row struct {
				CustomID string          `json:"custom_id"`
				Body     json.RawMessage `json:"body"`
			}
			if json.Unmarshal(rows[i], &row) != nil || row.CustomID != l.CustomID {
				t.Fatalf("%q: file row %s", b, rows[i])
			}
		}
	})
}
