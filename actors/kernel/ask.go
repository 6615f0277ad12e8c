package kernel

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// DefaultAskTimeout bounds how long an HTTP request waits for an actor.
const DefaultAskTimeout = 5 * time.Second

// Ask sends msg to pid and waits for a reply of type T. An error reply is
// returned as the error. A timeout or a dead actor becomes an Unavailable
// error, which the HTTP layer answers with 503.
func Ask[T any](k *Kernel, pid *actor.PID, msg any, timeout time.Duration) (T, error) {
	var zero T
	res, err := k.Root.RequestFuture(pid, msg, timeout).Result()
	switch {
	case errors.Is(err, actor.ErrTimeout):
		return zero, &Error{Kind: KindUnavailable, Code: "actor_timeout", Msg: pid.Id + " did not answer in time", Err: err}
	case errors.Is(err, actor.ErrDeadLetter):
		return zero, &Error{Kind: KindUnavailable, Code: "actor_unavailable", Msg: pid.Id + " is not running", Err: err}
	case err != nil:
		return zero, err
	}
	switch v := res.(type) {
	case T:
		return v, nil
	case error:
		return zero, v
	}
	return zero, fmt.Errorf("%s answered %T, want %T", pid.Id, res, zero)
}
