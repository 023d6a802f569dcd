package node

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/meridian-mesh/meridian/shared/providermock"
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
	ctx := context.Background()
	user := func(text string) []anthropic.MessageParam {
		return []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(text))}
	}

	t.Run("message", func(t *testing.T) {
		msg, err := client.Messages.New(ctx, anthropic.MessageNewParams{
			Model: "gpt-4o-mini", MaxTokens: 256,
			System:   []anthropic.TextBlockParam{{Text: "Be terse."}},
			Messages: user("hello #mock chunks=5"),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(msg.Content) != 1 || msg.Content[0].Text != providermock.Content(5) || msg.StopReason != "end_turn" || msg.Usage.OutputTokens != 5 {
			t.Fatalf("message = %+v", msg)
		}
		// The system prompt reached the upstream as a system message.
		reqs := m.mock.Requests()
		if body := string(reqs[len(reqs)-1].Body); !strings.Contains(body, `"role":"system"`) || !strings.Contains(body, "Be terse.") {
			t.Fatalf("upstream body lacks the system message: %s", body)
		}
	})

	t.Run("stream with accumulate", func(t *testing.T) {
		stream := client.Messages.NewStreaming(ctx, anthropic.MessageNewParams{
			Model: "gpt-4o-mini", MaxTokens: 256, Messages: user("hello #mock chunks=9"),
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
			Model: "gpt-4o-mini", MaxTokens: 256,
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
		// The result went upstream as an OpenAI tool message.
		reqs := m.mock.Requests()
		body := string(reqs[len(reqs)-1].Body)
		if !strings.Contains(body, `"role":"tool"`) || !strings.Contains(body, `"tool_call_id":"`+use.ID+`"`) {
			t.Fatalf("upstream body lacks the tool result: %s", body)
		}
	})

	for _, tt := range []struct {
		name, model, text string
		status            int
		typ               string
	}{
		{"not found", "no-such-model", "x", http.StatusNotFound, "not_found_error"},
		{"rate limited", "gpt-4o-mini", "x #mock status=429 retry_after=2", http.StatusTooManyRequests, "rate_limit_error"},
		{"upstream down", "mock-error-500", "x", http.StatusBadGateway, "api_error"},
	} {
		t.Run("typed error "+tt.name, func(t *testing.T) {
			_, err := client.Messages.New(ctx, anthropic.MessageNewParams{Model: anthropic.Model(tt.model), MaxTokens: 16, Messages: user(tt.text)})
			var apiErr *anthropic.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != tt.status || string(apiErr.Type()) != tt.typ {
				t.Fatalf("err = %v", err)
			}
		})
	}
}
