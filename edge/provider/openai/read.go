package openai

import (
	"github.com/meridian-mesh/meridian/edge/jsonscan"
	"github.com/meridian-mesh/meridian/edge/llm"
)

// The readers here take what the adapter needs from an upstream's
// answer, error or stream event in one jsonscan pass, each in document
// order. They read what gjson's path lookups read before them: the
// first member of a name wins, a member of the wrong kind counts as
// absent, and bytes the upstream broke are read up to the break (the
// answer itself still reaches the client unchanged).

// The usage members already read: the first of a name wins.
const (
	seenPrompt = 1 << iota
	seenCompletion
	seenTotal
)

// readUsage reads a usage object (OpenAI's prompt_tokens,
// completion_tokens, total_tokens).
func readUsage(s *jsonscan.Scanner) llm.Usage {
	var u llm.Usage
	seen := 0
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "prompt_tokens":
			u.PromptTokens, seen = firstInt(s, seen, seenPrompt, u.PromptTokens)
		case "completion_tokens":
			u.CompletionTokens, seen = firstInt(s, seen, seenCompletion, u.CompletionTokens)
		case "total_tokens":
			u.TotalTokens, seen = firstInt(s, seen, seenTotal, u.TotalTokens)
		}
		return true
	})
	return u
}

// readResponsesUsage reads a Responses usage object (input_tokens,
// output_tokens); the total is their sum.
func readResponsesUsage(s *jsonscan.Scanner) llm.Usage {
	var in, out int
	seen := 0
	s.Object(func(k []byte) bool {
		switch string(k) {
		case "input_tokens":
			in, seen = firstInt(s, seen, seenPrompt, in)
		case "output_tokens":
			out, seen = firstInt(s, seen, seenCompletion, out)
		}
		return true
	})
	return llm.Usage{PromptTokens: in, CompletionTokens: out, TotalTokens: in + out}
}

func firstInt(s *jsonscan.Scanner, seen, bit, cur int) (int, int) {
	if seen&bit != 0 {
		return cur, seen
	}
	return int(s.LooseInt()), seen | bit
}
