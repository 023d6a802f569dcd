package openai

import (
	"math"
	"strconv"
	"strings"

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
	return int(lenientInt(s)), seen | bit
}

// lenientInt reads a token count as the adapter always has (it was
// gjson's Result.Int): a number exactly when it is an integer, else
// truncated towards zero and clamped; a string holding a number as
// that number; true as 1; anything else as 0.
func lenientInt(s *jsonscan.Scanner) int64 {
	switch s.Peek() {
	case jsonscan.Number:
		return numberInt(string(s.Raw()))
	case jsonscan.String:
		str := s.Str()
		if len(str) > 0 && (str[0] == '-' || str[0] >= '0' && str[0] <= '9') && strings.IndexFunc(str[1:], notDigit) < 0 && str != "-" {
			return numberInt(str)
		}
		if f, err := strconv.ParseFloat(str, 64); err == nil {
			return clampInt(f)
		}
	case jsonscan.Bool:
		if s.Bool() {
			return 1
		}
	default:
		s.Skip()
	}
	return 0
}

func notDigit(r rune) bool { return r < '0' || r > '9' }

// numberInt reads a number's text: exactly when it is an integer that
// fits, else as a float truncated and clamped.
func numberInt(text string) int64 {
	if n, err := strconv.ParseInt(text, 10, 64); err == nil {
		return n
	}
	f, _ := strconv.ParseFloat(text, 64)
	return clampInt(f)
}

func clampInt(f float64) int64 {
	switch {
	case f >= math.MaxInt64:
		return math.MaxInt64
	case f < math.MinInt64:
		return math.MinInt64
	}
	return int64(f)
}
