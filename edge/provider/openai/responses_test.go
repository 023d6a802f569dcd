package openai

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/meridian-mesh/meridian/edge/llm"
	"github.com/meridian-mesh/meridian/shared/table"
)

func responsesReq(stream bool) *llm.Request {
	native := []byte(`{"model":"alias","input":"x","reasoning":{"effort":"low"}}`)
	return &llm.Request{ID: "r1", Op: llm.OpChat, Model: "alias", Stream: stream, Native: native, NativeFormat: llm.FormatResponses,
		Chat: &llm.ChatRequest{Model: "alias", Messages: []llm.Message{{Role: "user", Content: []byte(`"x"`)}}}}
}

// TestResponsesPassthrough: only a provider whose preset speaks the
// Responses API gets the client's Responses body, at /responses; its
// stream is relayed event by event, its usage read from the terminal
// event, and a stream without one is cut.
func TestResponsesPassthrough(t *testing.T) {
	var path string
	var stream string
	h := func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/responses" && string(b) != `{"model":"gpt-4o","input":"x","reasoning":{"effort":"low"}}` {
			http.Error(w, "body "+string(b), 400)
			return
		}
		if r.URL.Path == "/v1/chat/completions" {
			w.Write([]byte(`{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`))
			return
		}
		if stream != "" {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Write([]byte(stream))
			return
		}
		w.Write([]byte(`{"id":"resp_up","object":"response","usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}`))
	}
	plain := adapter(t, h, nil)
	if _, err := plain.Do(context.Background(), responsesReq(false), "gpt-4o"); err != nil || path != "/v1/chat/completions" {
		t.Fatalf("a provider without the preset got %s (%v)", path, err)
	}
	a := adapter(t, h, func(p *table.Provider) { p.Preset = "openai" })
	resp, err := a.Do(context.Background(), responsesReq(false), "gpt-4o")
	if err != nil {
		t.Fatal(err)
	}
	if path != "/v1/responses" || resp.Format != llm.FormatResponses || string(resp.Body) != `{"id":"resp_up","object":"response","usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}` || resp.Usage.PromptTokens != 5 || resp.Usage.CompletionTokens != 2 {
		t.Fatalf("path %s response %+v", path, resp)
	}

	read := func(t *testing.T, body string) (names []string, u llm.Usage, hasUsage bool, err error) {
		t.Helper()
		stream = body
		resp, err := a.Do(context.Background(), responsesReq(true), "gpt-4o")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Stream.Close()
		for {
			c, err := resp.Stream.Next()
			if err != nil {
				u, hasUsage = resp.Stream.Usage()
				return names, u, hasUsage, err
			}
			names = append(names, c.Event)
		}
	}
	const created = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\n"
	const delta = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"delta\":\"hi\"}\n\n"
	names, u, ok, err := read(t, created+delta+"event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n")
	if !errors.Is(err, io.EOF) || len(names) != 3 || names[2] != "response.completed" || !ok || u.PromptTokens != 3 || u.CompletionTokens != 1 {
		t.Fatalf("complete stream: %v %v %+v %v", names, err, u, ok)
	}
	if _, _, _, err := read(t, created+delta); !errors.Is(err, llm.ErrStreamCut) {
		t.Fatalf("cut stream: %v", err)
	}
	_, _, _, err = read(t, created+"event: error\ndata: {\"type\":\"error\",\"code\":\"server_error\",\"message\":\"boom\",\"sequence_number\":1}\n\n")
	var le *llm.Error
	if !errors.As(err, &le) || le.Code != "server_error" || le.Status != http.StatusBadGateway {
		t.Fatalf("error event: %v", err)
	}
}
