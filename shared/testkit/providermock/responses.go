package providermock

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// ---- the Responses API (kind openai) ----

// responsesRequest is what the mock reads of a Responses request.
type responsesRequest struct {
	Model           string          `json:"model"`
	Input           json.RawMessage `json:"input"`
	Instructions    string          `json:"instructions"`
	Stream          bool            `json:"stream"`
	MaxOutputTokens int             `json:"max_output_tokens"`
	Tools           []struct {
		Type string `json:"type"`
		Name string `json:"name"`
	} `json:"tools"`
}

// responsesInput is input as a list; a string is one user message.
type responsesInput []struct {
	Type    string      `json:"type"`
	Role    string      `json:"role"`
	Content textContent `json:"content"`
	Output  textContent `json:"output"`
}

// openAIResponses serves POST /v1/responses: a response object, or the
// Responses event sequence, with the same directives, text and tool call
// as chat completions. Its response IDs start "resp_mock", so a test can
// tell an answer that passed through from one Meridian wrote.
func (s *Server) openAIResponses(rq *request) {
	var req responsesRequest
	if !rq.decode(&req) {
		return
	}
	if req.Model == "" {
		rq.badRequest("Missing required parameter: 'model'.", "model")
		return
	}
	var items responsesInput
	if len(req.Input) > 0 && req.Input[0] == '"' {
		var text textContent
		json.Unmarshal(req.Input, &text)
		items = responsesInput{{Role: "user", Content: text}}
	} else if err := json.Unmarshal(req.Input, &items); err != nil || len(items) == 0 {
		rq.badRequest("Invalid 'input': expected a string or a non-empty array of input items.", "input")
		return
	}
	d := s.baseDirectives()
	d.applyModel(req.Model)
	prompt, last := countWords(req.Instructions), -1
	for i := range items {
		prompt += countWords(string(items[i].Content)) + countWords(string(items[i].Output))
		if items[i].Role == "user" {
			last = i
		}
	}
	if last >= 0 {
		if err := d.parse(string(items[last].Content)); err != nil {
			rq.badRequest(err.Error(), "input")
			return
		}
	}
	if !rq.proceed(&d, req.Model) {
		return
	}
	chunks, finish := answerSize(d.chunks, req.MaxOutputTokens)
	r := mockResponse{id: s.newID("resp_mock"), model: req.Model, created: time.Now().Unix(), chunks: chunks,
		incomplete: finish == "length", prompt: max(prompt, 1)}
	if d.toolCall != "" && len(req.Tools) > 0 {
		r.tool, r.callID, r.chunks = d.toolCall, s.newID("call_"), len(toolFragments)
	}
	if req.Stream {
		rq.streamResponses(&r, &d)
		return
	}
	b := r.appendObject(rq.buffer(), "completed", true)
	rq.keep(b)
	rq.writeJSON(http.StatusOK, b)
}

type mockResponse struct {
	id, model    string
	created      int64
	chunks       int
	incomplete   bool
	prompt       int
	tool, callID string
	seq          int
}

func (r *mockResponse) appendItem(b []byte, done bool) []byte {
	status := "in_progress"
	if done {
		status = "completed"
	}
	if r.tool != "" {
		b = append(b, `{"id":"fc_`+r.id[5:]+`","type":"function_call","status":"`...)
		b = append(b, status...)
		b = append(b, `","arguments":`...)
		if done {
			b = appendJSONString(b, ToolArguments)
		} else {
			b = append(b, `""`...)
		}
		b = append(b, `,"call_id":"`...)
		b = append(b, r.callID...)
		b = append(b, `","name":`...)
		b = appendJSONString(b, r.tool)
		return append(b, '}')
	}
	b = append(b, `{"id":"msg_`+r.id[5:]+`","type":"message","status":"`...)
	b = append(b, status...)
	b = append(b, `","role":"assistant","content":[`...)
	if done {
		b = append(b, `{"type":"output_text","annotations":[],"logprobs":[],"text":`...)
		b = appendJSONString(b, Content(r.chunks))
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

func (r *mockResponse) appendObject(b []byte, status string, done bool) []byte {
	if done && r.incomplete {
		status = "incomplete"
	}
	b = append(b, `{"id":"`...)
	b = append(b, r.id...)
	b = append(b, `","object":"response","created_at":`...)
	b = strconv.AppendInt(b, r.created, 10)
	b = append(b, `,"status":"`...)
	b = append(b, status...)
	b = append(b, `","error":null,"incomplete_details":`...)
	if done && r.incomplete {
		b = append(b, `{"reason":"max_output_tokens"}`...)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"model":`...)
	b = appendJSONString(b, r.model)
	b = append(b, `,"output":[`...)
	if done {
		b = r.appendItem(b, true)
	}
	b = append(b, `],"parallel_tool_calls":true,"store":false,"tool_choice":"auto","tools":[],"usage":`...)
	if done {
		b = append(b, `{"input_tokens":`...)
		b = strconv.AppendInt(b, int64(r.prompt), 10)
		b = append(b, `,"input_tokens_details":{"cached_tokens":0},"output_tokens":`...)
		b = strconv.AppendInt(b, int64(r.chunks), 10)
		b = append(b, `,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":`...)
		b = strconv.AppendInt(b, int64(r.prompt+r.chunks), 10)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	return append(b, `,"metadata":{}}`...)
}

// event writes one Responses event.
func (r *mockResponse) event(rq *request, name string, rest func([]byte) []byte) bool {
	b := rq.buffer()
	b = append(b, "event: "...)
	b = append(b, name...)
	b = append(b, "\ndata: {\"type\":\""...)
	b = append(b, name...)
	b = append(b, `","sequence_number":`...)
	b = strconv.AppendInt(b, int64(r.seq), 10)
	r.seq++
	b = rest(b)
	b = append(b, "}\n\n"...)
	rq.keep(b)
	return rq.send(b)
}

func (rq *request) streamResponses(r *mockResponse, d *directives) {
	rq.startStream()
	itemID := "msg_" + r.id[5:]
	if r.tool != "" {
		itemID = "fc_" + r.id[5:]
	}
	ref := func(b []byte) []byte {
		b = append(b, `,"item_id":"`...)
		b = append(b, itemID...)
		return append(b, `","output_index":0`...)
	}
	for _, name := range []string{"response.created", "response.in_progress"} {
		if !r.event(rq, name, func(b []byte) []byte {
			return r.appendObject(append(b, `,"response":`...), "in_progress", false)
		}) {
			return
		}
	}
	if !r.event(rq, "response.output_item.added", func(b []byte) []byte {
		return r.appendItem(append(b, `,"output_index":0,"item":`...), false)
	}) {
		return
	}
	if r.tool == "" && !r.event(rq, "response.content_part.added", func(b []byte) []byte {
		return append(ref(b), `,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}`...)
	}) {
		return
	}
	for k := 0; k < r.chunks; k++ {
		if k == d.cutAfter {
			rq.abort()
		}
		if k > 0 && !rq.wait(d.chunkDelay) {
			return
		}
		ok := false
		if r.tool != "" {
			ok = r.event(rq, "response.function_call_arguments.delta", func(b []byte) []byte {
				return appendJSONString(append(ref(b), `,"delta":`...), toolFragments[k])
			})
		} else {
			ok = r.event(rq, "response.output_text.delta", func(b []byte) []byte {
				b = appendJSONString(append(ref(b), `,"content_index":0,"delta":`...), piece(k))
				return append(b, `,"logprobs":[]`...)
			})
		}
		if !ok {
			return
		}
	}
	if d.cutAfter >= r.chunks {
		rq.abort()
	}
	if r.tool != "" {
		if !r.event(rq, "response.function_call_arguments.done", func(b []byte) []byte {
			return appendJSONString(append(ref(b), `,"arguments":`...), ToolArguments)
		}) {
			return
		}
	} else if !r.event(rq, "response.output_text.done", func(b []byte) []byte {
		return append(appendJSONString(append(ref(b), `,"content_index":0,"text":`...), Content(r.chunks)), `,"logprobs":[]`...)
	}) {
		return
	}
	if !r.event(rq, "response.output_item.done", func(b []byte) []byte {
		return r.appendItem(append(b, `,"output_index":0,"item":`...), true)
	}) {
		return
	}
	name := "response.completed"
	if r.incomplete {
		name = "response.incomplete"
	}
	r.event(rq, name, func(b []byte) []byte {
		return r.appendObject(append(b, `,"response":`...), "completed", true)
	})
}
