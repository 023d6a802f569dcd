package node

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
)

// TestAnthropicSDK drives the edge's /v1/messages with Anthropic's
// official Go SDK, routed to an OpenAI-compatible upstream: the
// translation both ways, as a user of the SDK sees it.
func TestAnthropicSDK(t *testing.T) {
	m := startMesh(t, nil)
	client := anthropic.NewClient(
		option.WithBaseURL(m.url),
		option.WithAPIKey("sk-unused"),
		option.WithMaxRetries(0),
	)
	for _, model := range matrixModels(m) {
		t.Run(model, func(t *testing.T) { anthropicMatrix(t, m, client, model) })
	}
	t.Run("typed error not found", func(t *testing.T) {
		_, err := client.Messages.New(context.Background(), anthropic.MessageNewParams{Model: "no-such-model", MaxTokens: 16, Messages: user("x")})
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound || string(apiErr.Type()) != "not_found_error" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("models", func(t *testing.T) {
		page, err := client.Models.List(context.Background(), anthropic.ModelListParams{})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Data) == 0 || page.Data[0].ID != "gpt-4o-mini" || page.Data[0].Type != "model" {
			t.Fatalf("models = %+v", page.Data)
		}
		one, err := client.Models.Get(context.Background(), "claude-mock", anthropic.ModelGetParams{})
		if err != nil || one.ID != "claude-mock" {
			t.Fatalf("model = %+v, %v", one, err)
		}
		_, err = client.Models.Get(context.Background(), "nope", anthropic.ModelGetParams{})
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("typed error upstream down", func(t *testing.T) {
		_, err := client.Messages.New(context.Background(), anthropic.MessageNewParams{Model: "mock-error-500", MaxTokens: 16, Messages: user("x")})
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadGateway || string(apiErr.Type()) != "api_error" {
			t.Fatalf("err = %v", err)
		}
	})
}

func user(text string) []anthropic.MessageParam {
	return []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(text))}
}

// anthropicMatrix is one column of the cross-format matrix: the Anthropic
// SDK against a model on one kind of upstream.
func anthropicMatrix(t *testing.T, m *testMesh, client anthropic.Client, model string) {
	ctx := context.Background()
	onOpenAIMock := model == "gpt-4o-mini"

	t.Run("message", func(t *testing.T) {
		msg, err := client.Messages.New(ctx, anthropic.MessageNewParams{
			Model: anthropic.Model(model), MaxTokens: 256,
			System:   []anthropic.TextBlockParam{{Text: "Be terse."}},
			Messages: user("hello #mock chunks=5"),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(msg.Content) != 1 || msg.Content[0].Text != providermock.Content(5) || msg.StopReason != "end_turn" || msg.Usage.OutputTokens != 5 {
			t.Fatalf("message = %+v", msg)
		}
		if !onOpenAIMock {
			return
		}
		// The system prompt reached the upstream as a system message.
		reqs := m.mock.Requests()
		if body := string(reqs[len(reqs)-1].Body); !strings.Contains(body, `"role":"system"`) || !strings.Contains(body, "Be terse.") {
			t.Fatalf("upstream body lacks the system message: %s", body)
		}
	})

	t.Run("stream with accumulate", func(t *testing.T) {
		stream := client.Messages.NewStreaming(ctx, anthropic.MessageNewParams{
			Model: anthropic.Model(model), MaxTokens: 256, Messages: user("hello #mock chunks=9"),
		})
		var msg anthropic.Message
		var kinds []string
		for stream.Next() {
			ev := stream.Current()
			kinds = append(kinds, ev.Type)
			if err := msg.Accumulate(ev); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if msg.Content[0].Text != providermock.Content(9) || msg.StopReason != "end_turn" || msg.Usage.OutputTokens != 9 {
			t.Fatalf("accumulated %+v", msg)
		}
		seq := strings.Join(kinds, ",")
		if !strings.HasPrefix(seq, "message_start,content_block_start,content_block_delta") ||
			!strings.HasSuffix(seq, "content_block_stop,message_delta,message_stop") {
			t.Fatalf("event order %s", seq)
		}
	})

	t.Run("tool call round trip", func(t *testing.T) {
		params := anthropic.MessageNewParams{
			Model: anthropic.Model(model), MaxTokens: 256,
			Messages: user("weather in Paris? #mock tool_call=get_weather"),
			Tools: []anthropic.ToolUnionParam{anthropic.ToolUnionParamOfTool(anthropic.ToolInputSchemaParam{
				Properties: map[string]any{"location": map[string]string{"type": "string"}},
			}, "get_weather")},
		}
		stream := client.Messages.NewStreaming(ctx, params)
		var msg anthropic.Message
		for stream.Next() {
			if err := msg.Accumulate(stream.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		var use *anthropic.ToolUseBlock
		for _, b := range msg.Content {
			if b.Type == "tool_use" {
				u := b.AsToolUse()
				use = &u
			}
		}
		if use == nil || use.Name != "get_weather" || string(use.Input) != providermock.ToolArguments || msg.StopReason != "tool_use" {
			t.Fatalf("tool use = %+v, stop %q", use, msg.StopReason)
		}
		params.Messages = append(params.Messages, msg.ToParam(),
			anthropic.NewUserMessage(anthropic.NewToolResultBlock(use.ID, `{"temp_c":18}`, false)))
		params.Messages[0] = anthropic.NewUserMessage(anthropic.NewTextBlock("thanks"))
		answer, err := client.Messages.New(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		if answer.StopReason != "end_turn" {
			t.Fatalf("stop = %q", answer.StopReason)
		}
		if !onOpenAIMock {
			return
		}
		// The result went upstream as an OpenAI tool message.
		reqs := m.mock.Requests()
		body := string(reqs[len(reqs)-1].Body)
		if !strings.Contains(body, `"role":"tool"`) || !strings.Contains(body, `"tool_call_id":"`+use.ID+`"`) {
			t.Fatalf("upstream body lacks the tool result: %s", body)
		}
	})

	t.Run("typed error rate limited", func(t *testing.T) {
		_, err := client.Messages.New(ctx, anthropic.MessageNewParams{Model: anthropic.Model(model), MaxTokens: 16, Messages: user("x #mock status=429 retry_after=2")})
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests || string(apiErr.Type()) != "rate_limit_error" {
			t.Fatalf("err = %v", err)
		}
	})
	if model != "claude-mock" {
		return // only Anthropic reports overload with a status of its own
	}
	t.Run("overload is a 529", func(t *testing.T) {
		_, err := client.Messages.New(ctx, anthropic.MessageNewParams{Model: anthropic.Model(model), MaxTokens: 16, Messages: user("x #mock status=529")})
		var apiErr *anthropic.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 529 || string(apiErr.Type()) != "overloaded_error" {
			t.Fatalf("err = %v", err)
		}
	})
}
