package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/meridian-mesh/meridian/edge/config"
	"github.com/meridian-mesh/meridian/edge/engine/enginetest"
	"github.com/meridian-mesh/meridian/shared/table"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"
)

// TestResponsesSDK drives POST /v1/responses with OpenAI's official Go
// SDK, unchanged but for its base URL, against a model on every kind of
// upstream the mesh has.
func TestResponsesSDK(t *testing.T) {
	m := startMesh(t, nil)
	client := openai.NewClient(option.WithBaseURL(m.url+"/v1/"), option.WithAPIKey("sk-unused"), option.WithMaxRetries(0))
	for _, model := range matrixModels(m) {
		t.Run(model, func(t *testing.T) { responsesMatrix(t, client, model) })
	}

	t.Run("typed 404", func(t *testing.T) {
		_, err := client.Responses.New(context.Background(), responses.ResponseNewParams{
			Model: "no-such-model", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("store is refused", func(t *testing.T) {
		_, err := client.Responses.New(context.Background(), responses.ResponseNewParams{
			Model: "gpt-4o-mini", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x")}, Store: openai.Bool(true),
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "store" {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("stored responses are not found", func(t *testing.T) {
		_, err := client.Responses.Get(context.Background(), "resp_1", responses.ResponseGetParams{})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
			t.Fatalf("err = %v", err)
		}
	})
}

var weatherTool = responses.ToolParamOfFunction("get_weather",
	map[string]any{"type": "object", "properties": map[string]any{"location": map[string]string{"type": "string"}}}, false)

// responsesMatrix is one column of the Responses matrix: the SDK
// against a model on one kind of target.
func responsesMatrix(t *testing.T, client openai.Client, model string) {
	ctx := context.Background()
	t.Run("plain", func(t *testing.T) {
		var raw *http.Response
		r, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model:        model,
			Instructions: openai.String("Be terse."),
			Input:        responses.ResponseNewParamsInputUnion{OfString: openai.String("hello #mock chunks=4")},
		}, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if r.OutputText() != providermock.Content(4) || r.Status != "completed" || r.Usage.OutputTokens != 4 || r.Usage.InputTokens == 0 || !strings.HasPrefix(r.ID, "resp_") {
			t.Fatalf("response %s", r.RawJSON())
		}
		if raw.Header.Get("X-Meridian-Route") == "" {
			t.Fatal("no route header")
		}
	})

	t.Run("streamed", func(t *testing.T) {
		stream := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model: model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hello #mock chunks=9")},
		})
		var text strings.Builder
		var types []string
		var done responses.Response
		seq := int64(0)
		for stream.Next() {
			ev := stream.Current()
			if ev.SequenceNumber != seq {
				t.Fatalf("event %s has sequence_number %d, want %d", ev.Type, ev.SequenceNumber, seq)
			}
			seq++
			types = append(types, ev.Type)
			switch ev.Type {
			case "response.output_text.delta":
				text.WriteString(ev.Delta)
			case "response.completed":
				done = ev.Response
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if text.String() != providermock.Content(9) || done.OutputText() != providermock.Content(9) || done.Usage.OutputTokens != 9 {
			t.Fatalf("streamed %q, completed %s", text.String(), done.RawJSON())
		}
		if types[0] != "response.created" || types[1] != "response.in_progress" || types[len(types)-1] != "response.completed" {
			t.Fatalf("events %v", types)
		}
	})

	t.Run("tool call round trip", func(t *testing.T) {
		params := responses.ResponseNewParams{
			Model: model,
			Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
				responses.ResponseInputItemParamOfMessage("weather in Paris? #mock tool_call=get_weather", responses.EasyInputMessageRoleUser),
			}},
			Tools: []responses.ToolUnionParam{weatherTool},
		}
		stream := client.Responses.NewStreaming(ctx, params)
		var first responses.Response
		var args strings.Builder
		for stream.Next() {
			switch ev := stream.Current(); ev.Type {
			case "response.function_call_arguments.delta":
				args.WriteString(ev.Delta)
			case "response.completed":
				first = ev.Response
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		var call *responses.ResponseFunctionToolCall
		for _, it := range first.Output {
			if it.Type == "function_call" {
				fc := it.AsFunctionCall()
				call = &fc
			}
		}
		if call == nil || call.Name != "get_weather" || call.Arguments != providermock.ToolArguments || args.String() != providermock.ToolArguments || call.CallID == "" {
			t.Fatalf("first answer %s (streamed arguments %q)", first.RawJSON(), args.String())
		}
		// Send the result back, as an application would.
		params.Input.OfInputItemList[0] = responses.ResponseInputItemParamOfMessage("thanks", responses.EasyInputMessageRoleUser)
		for _, it := range first.Output {
			if it.Type == "function_call" {
				fc := it.AsFunctionCall().ToParam()
				params.Input.OfInputItemList = append(params.Input.OfInputItemList, responses.ResponseInputItemUnionParam{OfFunctionCall: &fc})
			}
		}
		out := responses.ResponseInputItemParamOfFunctionCallOutput(`{"temp_c":18}`)
		out.OfFunctionCallOutput.CallID = openai.String(call.CallID)
		params.Input.OfInputItemList = append(params.Input.OfInputItemList, out)
		r, err := client.Responses.New(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != "completed" || r.OutputText() == "" {
			t.Fatalf("second answer %s", r.RawJSON())
		}
	})

	t.Run("typed 429", func(t *testing.T) {
		_, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model: model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x #mock status=429 retry_after=3")},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Response.Header.Get("Retry-After") != "3" {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("stream cut is an error, not a short answer", func(t *testing.T) {
		stream := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model: model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("x #mock chunks=10 cut_after=4")},
		})
		completed := false
		for stream.Next() {
			completed = completed || stream.Current().Type == "response.completed"
		}
		if stream.Err() == nil || completed {
			t.Fatalf("the SDK saw a cut stream as a complete answer (completed %v)", completed)
		}
	})
}

// TestResponsesOverLink: a Responses request to edge A is served by
// edge B over the link, translated on A, and A's answer is the same
// whether B or A's own mock served it.
func TestResponsesOverLink(t *testing.T) {
	p := startLinkPair(t)
	client := openai.NewClient(option.WithBaseURL(p.a.url+"/v1/"), option.WithAPIKey("sk-unused"), option.WithMaxRetries(0))
	for _, model := range []string{"gpt-4o-mini", "claude-mock"} {
		t.Run(model, func(t *testing.T) {
			var raw *http.Response
			r, err := client.Responses.New(context.Background(), responses.ResponseNewParams{
				Model: model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hello #mock chunks=3")},
			}, option.WithResponseInto(&raw))
			if err != nil {
				t.Fatal(err)
			}
			if route := raw.Header.Get("X-Meridian-Route"); !strings.Contains(route, "target=peer/edge-b") {
				t.Fatalf("route %q", route)
			}
			if r.OutputText() != providermock.Content(3) || r.Usage.OutputTokens != 3 {
				t.Fatalf("response %s", r.RawJSON())
			}
			stream := client.Responses.NewStreaming(context.Background(), responses.ResponseNewParams{
				Model: model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hello #mock chunks=5")},
			})
			var done responses.Response
			for stream.Next() {
				if ev := stream.Current(); ev.Type == "response.completed" {
					done = ev.Response
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if done.OutputText() != providermock.Content(5) || done.Usage.OutputTokens != 5 {
				t.Fatalf("completed %s", done.RawJSON())
			}
		})
	}
}

// TestCountTokens: Anthropic's count_tokens is answered by an Anthropic
// upstream's own count, by Ollama's prompt count for an Ollama model,
// and by an estimate, marked as one, for everything else.
func TestCountTokens(t *testing.T) {
	m := startMesh(t, nil)
	anth := []string{"anthropic-version", "2023-06-01"}
	count := func(t *testing.T, model string) (int, string) {
		t.Helper()
		resp := m.post("/v1/messages/count_tokens", `{"model":"`+model+`","system":"Be terse.","messages":[{"role":"user","content":"one two three four"}]}`, anth...)
		b := readBody(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		var out struct {
			InputTokens *int `json:"input_tokens"`
		}
		if err := json.Unmarshal(b, &out); err != nil || out.InputTokens == nil {
			t.Fatalf("%s (%v)", b, err)
		}
		return *out.InputTokens, resp.Header.Get("X-Meridian-Token-Count")
	}
	t.Run("anthropic upstream", func(t *testing.T) {
		// The mock counts words, plus its marker overhead: 2 + 4.
		if n, src := count(t, "claude-mock"); n != providermock.CountTokensOverhead+6 || src != "upstream" {
			t.Fatalf("count %d from %q", n, src)
		}
	})
	t.Run("ollama upstream", func(t *testing.T) {
		if n, src := count(t, "llama-mock"); n != 6 || src != "upstream" {
			t.Fatalf("count %d from %q", n, src)
		}
	})
	for _, model := range []string{"gpt-4o-mini", "gemini-mock"} {
		t.Run("estimate "+model, func(t *testing.T) {
			if n, src := count(t, model); n < 1 || n > 100 || src != "estimate" {
				t.Fatalf("count %d from %q", n, src)
			}
		})
	}
	t.Run("unknown model", func(t *testing.T) {
		resp := m.post("/v1/messages/count_tokens", `{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}`, anth...)
		if b := readBody(t, resp); resp.StatusCode != 404 || !strings.Contains(string(b), `"not_found_error"`) {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	})
	t.Run("bad body", func(t *testing.T) {
		resp := m.post("/v1/messages/count_tokens", `{"model":"claude-mock","messages":[{"role":"user","content":[{"type":"hologram"}]}]}`, anth...)
		if b := readBody(t, resp); resp.StatusCode != 400 || !strings.Contains(string(b), "messages.0.content.0.type") {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	})
	t.Run("no usage record, no limit", func(t *testing.T) {
		// Counting generates nothing: the log shows no request line for it.
		before := strings.Count(m.logs.String(), `"path":"/v1/messages/count_tokens"`)
		count(t, "claude-mock")
		if after := strings.Count(m.logs.String(), `"path":"/v1/messages/count_tokens"`); after != before {
			t.Fatalf("count_tokens logged %d request lines", after-before)
		}
	})
}

// TestResponsesPassthrough: a provider whose preset speaks the
// Responses API (openai) gets a Responses client's request as it came,
// at /responses, and its answer comes back as it sent it; the SDK
// matrix holds for it as for every other target.
func TestResponsesPassthrough(t *testing.T) {
	m := startMesh(t, func(c *config.Config) {
		p := c.Table.Providers[0] // the OpenAI-compatible mock
		p.ID, p.Preset = "openai-direct", "openai"
		c.Table.Providers = append(c.Table.Providers, p)
		c.Table.Models = append(c.Table.Models, table.Model{ID: "gpt-direct"})
		c.Table.Routes = append(c.Table.Routes, &table.Route{Model: "gpt-direct", Targets: []table.Target{{Provider: "openai-direct", Model: "gpt-4o"}}})
	})
	client := openai.NewClient(option.WithBaseURL(m.url+"/v1/"), option.WithAPIKey("sk-unused"), option.WithMaxRetries(0))
	responsesMatrix(t, client, "gpt-direct")

	m.mock.Reset()
	r, err := client.Responses.New(context.Background(), responses.ResponseNewParams{
		Model: "gpt-direct", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hello #mock chunks=2")},
		Reasoning: shared.ReasoningParam{Effort: shared.ReasoningEffortLow},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.ID, "resp_mock") {
		t.Fatalf("the upstream's answer was rewritten: %s", r.RawJSON())
	}
	reqs := m.mock.Requests()
	if len(reqs) != 1 || reqs[0].Path != "/v1/responses" {
		t.Fatalf("upstream saw %+v", reqs)
	}
	// As it came: a field Meridian does not read arrives, and only the
	// model is renamed to the route's.
	var sent map[string]any
	if err := json.Unmarshal(reqs[0].Body, &sent); err != nil || sent["model"] != "gpt-4o" || sent["reasoning"] == nil {
		t.Fatalf("upstream got %s (%v)", reqs[0].Body, err)
	}
}

// TestLocalResponses: the Responses API and count_tokens against a model
// this edge runs itself, through a real Ollama, with the Go and the Node
// SDKs.
func TestLocalResponses(t *testing.T) {
	m := startLocalMesh(t, nil)
	client := openai.NewClient(option.WithBaseURL(m.url+"/v1/"), option.WithAPIKey("sk-unused"), option.WithMaxRetries(0))
	ctx := context.Background()

	t.Run("openai-go plain", func(t *testing.T) {
		var raw *http.Response
		r, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model: "tiny", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hello")}, MaxOutputTokens: openai.Int(20),
		}, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if r.OutputText() != enginetest.Expected(20) || r.Status != "incomplete" || r.IncompleteDetails.Reason != "max_output_tokens" || r.Usage.OutputTokens != 20 || r.Usage.InputTokens == 0 {
			t.Fatalf("response %s", r.RawJSON())
		}
		if route := raw.Header.Get("X-Meridian-Route"); !strings.Contains(route, "target=local;") {
			t.Fatalf("route %q", route)
		}
	})

	t.Run("openai-go streamed", func(t *testing.T) {
		stream := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model: "tiny", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hello")}, MaxOutputTokens: openai.Int(30),
		})
		var text strings.Builder
		var done responses.Response
		for stream.Next() {
			switch ev := stream.Current(); ev.Type {
			case "response.output_text.delta":
				text.WriteString(ev.Delta)
			case "response.incomplete":
				done = ev.Response
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if text.String() != enginetest.Expected(30) || done.OutputText() != text.String() || done.Usage.OutputTokens != 30 {
			t.Fatalf("streamed %q, final %s", text.String(), done.RawJSON())
		}
	})

	t.Run("count_tokens by the tokenizer", func(t *testing.T) {
		count := func(content string) int {
			resp := m.post("/v1/messages/count_tokens", `{"model":"tiny","messages":[{"role":"user","content":"`+content+`"}]}`, "anthropic-version", "2023-06-01")
			b := readBody(t, resp)
			var out struct {
				InputTokens int `json:"input_tokens"`
			}
			if err := json.Unmarshal(b, &out); err != nil || resp.StatusCode != 200 || resp.Header.Get("X-Meridian-Token-Count") != "tokenizer" {
				t.Fatalf("%d %s %q (%v)", resp.StatusCode, b, resp.Header.Get("X-Meridian-Token-Count"), err)
			}
			return out.InputTokens
		}
		short, long := count("hello"), count("hello hello hello hello")
		if short < 1 || long <= short {
			t.Fatalf("counts %d and %d", short, long)
		}
	})

	t.Run("node SDKs", func(t *testing.T) {
		node := nodeBinary(t)
		runNodeSDKs(t, node, m.url, "tiny", []string{"MERIDIAN_LOCAL_MODEL=tiny"}, "responses-local.test.mjs")
	})
}

// TestResponsesCache: a deterministic Responses request is served from
// the edge cache the second time, plain and streamed, with its usage
// saying the prompt was cached, and the provider sees it once.
func TestResponsesCache(t *testing.T) {
	m := startMesh(t, withCache)
	client := openai.NewClient(option.WithBaseURL(m.url+"/v1/"), option.WithAPIKey("sk-unused"), option.WithMaxRetries(0))
	params := responses.ResponseNewParams{
		Model: "gpt-4o-mini", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("capital of France? #mock chunks=6")},
		Temperature: openai.Float(0), MaxOutputTokens: openai.Int(64),
	}
	before := len(m.mock.Requests())
	var first, second *http.Response
	a, err := client.Responses.New(context.Background(), params, option.WithResponseInto(&first))
	if err != nil {
		t.Fatal(err)
	}
	b, err := client.Responses.New(context.Background(), params, option.WithResponseInto(&second))
	if err != nil {
		t.Fatal(err)
	}
	if first.Header.Get("X-Meridian-Cache") != "miss" || second.Header.Get("X-Meridian-Cache") != "hit" {
		t.Fatalf("x-meridian-cache: %q then %q", first.Header.Get("X-Meridian-Cache"), second.Header.Get("X-Meridian-Cache"))
	}
	if b.OutputText() != a.OutputText() || a.OutputText() != providermock.Content(6) ||
		b.Usage.InputTokensDetails.CachedTokens != b.Usage.InputTokens || b.Usage.InputTokens == 0 || a.Usage.InputTokensDetails.CachedTokens != 0 {
		t.Fatalf("miss %s\nhit %s", a.RawJSON(), b.RawJSON())
	}
	stream := func() (string, responses.Response, string) {
		var raw *http.Response
		s := client.Responses.NewStreaming(context.Background(), params, option.WithResponseInto(&raw))
		var text strings.Builder
		var done responses.Response
		for s.Next() {
			switch ev := s.Current(); ev.Type {
			case "response.output_text.delta":
				text.WriteString(ev.Delta)
			case "response.completed":
				done = ev.Response
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		return text.String(), done, raw.Header.Get("X-Meridian-Cache")
	}
	t1, _, c1 := stream()
	t2, d2, c2 := stream()
	if c1 != "miss" || c2 != "hit" || t1 != t2 || t1 != providermock.Content(6) || d2.Usage.InputTokensDetails.CachedTokens != d2.Usage.InputTokens {
		t.Fatalf("streams: %q %q, %q %q, %s", c1, c2, t1, t2, d2.RawJSON())
	}
	if n := len(m.mock.Requests()) - before; n != 2 {
		t.Fatalf("the provider saw %d requests, want 2 (one plain, one streamed)", n)
	}
}
