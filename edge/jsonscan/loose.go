package jsonscan

import (
	"errors"
	"math"
	"strconv"
	"unsafe"
)

// LooseInt reads any value as an integer the lenient way the edge's
// adapters always read token counts and indexes (it was gjson's
// Result.Int): a number exactly when it is an integer that fits, else
// as a float truncated toward zero and clamped to int64; a string
// holding a number (strconv's syntax) as that number, the same way;
// true as 1; anything else (false, null, an object, an array, a string
// that holds no number or NaN) as 0. The value is consumed either way.
func (s *Scanner) LooseInt() int64 {
	switch s.Peek() {
	case Number:
		b := s.number()
		if b == nil {
			return 0
		}
		return LooseIntText(unsafe.String(unsafe.SliceData(b), len(b)))
	case String:
		return LooseIntText(s.Str())
	case Bool:
		if s.Bool() {
			return 1
		}
		return 0
	}
	s.Skip()
	return 0
}

// LooseIntText is LooseInt's reading of a number's text: exactly when
// it is an integer that fits, else a float truncated toward zero and
// clamped to int64 (out of range as ±Inf, so clamped too); 0 when t is
// no number or NaN.
func LooseIntText(t string) int64 {
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		return n
	}
	f, err := strconv.ParseFloat(t, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange), f != f:
		return 0
	case f >= math.MaxInt64:
		return math.MaxInt64
	case f <= math.MinInt64:
		return math.MinInt64
	}
	return int64(f)
}

// OptStr reads a string, or skips any other value and returns "": the
// adapters' reading of a member that counts as absent when it is not a
// string.
func (s *Scanner) OptStr() string {
	if s.Peek() == String {
		return s.Str()
	}
	s.Skip()
	return ""
}
