package fsm

import "errors"

// Error codes, carried in Result.code and in API errors.
const (
	CodeInvalid   = "invalid"
	CodeNotFound  = "not_found"
	CodeConflict  = "conflict"
	CodeReference = "reference"
	// CodeHalted answers every command once a replica has met a log entry
	// it cannot apply (FSM.Halted).
	CodeHalted = "halted"
)

// Sentinel errors; an *Error matches the one for its code with errors.Is.
var (
	ErrInvalid   = errors.New("invalid")
	ErrNotFound  = errors.New("not found")
	ErrConflict  = errors.New("conflict")
	ErrReference = errors.New("dangling reference")
)

// Error is a rejected entity or write. Field names the offending field,
// in the entity's JSON names, when there is one.
type Error struct {
	Code    string
	Field   string
	Message string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// Is matches the sentinel for e's code.
func (e *Error) Is(target error) bool {
	switch e.Code {
	case CodeInvalid:
		return target == ErrInvalid
	case CodeNotFound:
		return target == ErrNotFound
	case CodeConflict:
		return target == ErrConflict
	case CodeReference:
		return target == ErrReference
	}
	return false
}
