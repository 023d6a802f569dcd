package node

import (
	"context"
	"errors"
	"testing"

	"github.com/meridian-mesh/meridian/shared/testkit/providermock"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
)

// TestOpenAISDK drives the edge with OpenAI's official Go SDK, unchanged
// except for its base URL: what users will do.
func TestOpenAISDK(t *testing.T) {
	m := startMesh(t, nil)
	client := openai.NewClient(
		option.WithBaseURL(m.url+"/v1/"),
		option.WithAPIKey("sk-unused"),
		option.WithMaxRetries(0),
	)
	ctx := context.Background()

	for _, model := range matrixModels(m) {
		t.Run(model, func(t *testing.T) { openAIMatrix(t, client, model) })
	}

	t.Run("embeddings", func(t *testing.T) {
		// The SDK asks for base64 by default and decodes it.
		for _, model := range []string{"text-embedding-3-small", "llama-embed"} {
			emb, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
				Model: openai.EmbeddingModel(model),
				Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a", "b"}},
			})
			if err != nil {
				t.Fatalf("%s: %v", model, err)
			}
			want := make([]float32, len(emb.Data[0].Embedding))
			providermock.Embedding(want, "a")
			if len(emb.Data) != 2 || len(want) == 0 || float32(emb.Data[0].Embedding[0]) != want[0] {
				t.Fatalf("%s: embeddings = %+v, want first vector %v", model, emb.Data, want)
			}
		}
	})

	t.Run("typed 404", func(t *testing.T) {
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "no-such-model", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
			t.Fatalf("err = %v", err)
		}
	})
}

// openAIMatrix is one column of the cross-format matrix: the OpenAI SDK
// against a model on one kind of upstream.
func openAIMatrix(t *testing.T, client openai.Client, model string) {
	ctx := context.Background()
	t.Run("chat", func(t *testing.T) {
		cc, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:    model,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello #mock chunks=4")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if cc.Choices[0].Message.Content != providermock.Content(4) || cc.Usage.CompletionTokens != 4 {
			t.Fatalf("content %q usage %+v", cc.Choices[0].Message.Content, cc.Usage)
		}
	})

	t.Run("stream with accumulator", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:         model,
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello #mock chunks=12")},
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		acc := openai.ChatCompletionAccumulator{}
		for stream.Next() {
			if !acc.AddChunk(stream.Current()) {
				t.Fatal("accumulator rejected a chunk")
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if acc.Choices[0].Message.Content != providermock.Content(12) || acc.Usage.CompletionTokens != 12 {
			t.Fatalf("content %q usage %+v", acc.Choices[0].Message.Content, acc.Usage)
		}
	})

	t.Run("tool call round trip", func(t *testing.T) {
		params := openai.ChatCompletionNewParams{
			Model:    model,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("weather in Paris? #mock tool_call=get_weather")},
			Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
				Name:       "get_weather",
				Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{"location": map[string]string{"type": "string"}}},
			})},
		}
		stream := client.Chat.Completions.NewStreaming(ctx, params)
		acc := openai.ChatCompletionAccumulator{}
		var finished *openai.FinishedChatCompletionToolCall
		for stream.Next() {
			acc.AddChunk(stream.Current())
			if tc, ok := acc.JustFinishedToolCall(); ok {
				finished = &tc
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if finished == nil || finished.Name != "get_weather" || finished.Arguments != providermock.ToolArguments {
			t.Fatalf("tool call = %+v", finished)
		}
		// Send the result back, as an application would.
		params.Messages = append(params.Messages, acc.Choices[0].Message.ToParam(),
			openai.ToolMessage(`{"temp_c":18}`, finished.ID))
		params.Messages[0] = openai.UserMessage("thanks")
		cc, err := client.Chat.Completions.New(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		if cc.Choices[0].FinishReason != "stop" {
			t.Fatalf("finish = %q", cc.Choices[0].FinishReason)
		}
	})

	t.Run("typed 429", func(t *testing.T) {
		_, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x #mock status=429 retry_after=3")},
		})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Response.Header.Get("Retry-After") != "3" {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("stream cut is an error, not a short answer", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x #mock chunks=10 cut_after=4")},
		})
		for stream.Next() {
		}
		if stream.Err() == nil {
			t.Fatal("the SDK saw a cut stream as a complete answer")
		}
	})
}
