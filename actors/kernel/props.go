package kernel

import (
	"fmt"
	"runtime/debug"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
)

// Props builds actor props with the middleware every fangd actor gets: a
// panic is logged with its stack (Proto.Actor logs none) and then re-raised
// so that supervision still sees it. Children are supervised with
// DefaultBackoff unless opts say otherwise.
func (k *Kernel) Props(producer actor.Producer, opts ...actor.PropsOption) *actor.Props {
	base := []actor.PropsOption{
		actor.WithReceiverMiddleware(panicLogger(k.Log)),
		actor.WithSupervisor(DefaultBackoff.Strategy()),
	}
	return actor.PropsFromProducer(producer, append(base, opts...)...)
}

// PropsTemplate is Props for an actor kind spawned often, each actor with
// a producer of its own (an A2A task holds its record in the producer, for
// restarts): the middleware chain, the supervisor and opts are built once,
// and each call copies them with producer in place. Proto.Actor never
// changes Props once they are configured, so the copies can share the
// template's middleware slices and chains.
func (k *Kernel) PropsTemplate(opts ...actor.PropsOption) func(actor.Producer) *actor.Props {
	tmpl := k.Props(nil, opts...)
	return func(producer actor.Producer) *actor.Props {
		props := *tmpl
		return props.Configure(actor.WithProducer(producer))
	}
}

func panicLogger(log zerolog.Logger) actor.ReceiverMiddleware {
	return func(next actor.ReceiverFunc) actor.ReceiverFunc {
		return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
			defer func() {
				if r := recover(); r != nil {
					// The message's type only: its content may hold secrets.
					log.Error().Str("actor", c.Self().Id).
						Str("message_type", fmt.Sprintf("%T", env.Message)).
						Str("panic", fmt.Sprint(r)).
						Str("stack", string(debug.Stack())).
						Msg("actor panicked")
					panic(r)
				}
			}()
			next(c, env)
		}
	}
}

// SendAfter sends msg to the actor itself after d, at once when d is not
// positive (the returned timer is then nil). Stop the timer to cancel; a
// message already on its way is the receiver's to recognise as stale (a
// generation number in msg).
func SendAfter(c actor.Context, d time.Duration, msg any) *time.Timer {
	self := c.Self()
	if d <= 0 {
		c.Send(self, msg)
		return nil
	}
	system := c.ActorSystem()
	return time.AfterFunc(d, func() { system.Root.Send(self, msg) })
}
