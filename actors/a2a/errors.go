package a2a

import (
	"context"
	"errors"

	"github.com/a2aproject/a2a-go/v2/a2a"

	"github.com/fangd/fangd/actors/kernel"
)

// Domain errors carry a kernel kind (so the REST routes map them to a
// status in transport/http's one table) and a code that toProtocol maps to
// the A2A spec's error (so the JSON-RPC routes answer with the spec's
// codes).

func errTaskNotFound(id string) error {
	return kernel.Errorf(kernel.KindNotFound, "task_not_found", "task %s not found", id)
}

func errTaskNotCancelable(rec *taskRecord) error {
	return kernel.Errorf(kernel.KindConflict, "task_not_cancelable", "task %s has already finished (state %s) and cannot be canceled", rec.ID, SeedStatus(rec.State))
}

func errAgentNotFound(id string) error {
	return kernel.Errorf(kernel.KindNotFound, "agent_not_found", "external agent %s not found", id)
}

func errPushNotFound(taskID, configID string) error {
	return kernel.Errorf(kernel.KindNotFound, "push_config_not_found", "task %s has no push notification config %q", taskID, configID)
}

var errPushUnsupported = kernel.Errorf(kernel.KindUnsupported, "push_not_supported",
	"push notifications are not available: fangd has no webhook delivery engine wired")

func errInvalidMessage(format string, args ...any) error {
	return kernel.Errorf(kernel.KindInvalid, "invalid_message", format, args...)
}

func errUnsupportedContent(format string, args ...any) error {
	return kernel.Errorf(kernel.KindInvalid, "unsupported_content", format, args...)
}

func errUnsupportedOperation(format string, args ...any) error {
	return kernel.Errorf(kernel.KindInvalid, "unsupported_operation", format, args...)
}

// protocolErrors maps domain codes to the A2A spec's errors.
var protocolErrors = map[string]error{
	"task_not_found":        a2a.ErrTaskNotFound,
	"task_not_cancelable":   a2a.ErrTaskNotCancelable,
	"push_not_supported":    a2a.ErrPushNotificationNotSupported,
	"unsupported_content":   a2a.ErrUnsupportedContentType,
	"unsupported_operation": a2a.ErrUnsupportedOperation,
	"push_config_not_found": a2a.ErrInvalidParams,
	"task_finished":         a2a.ErrUnsupportedOperation,
	"version_not_supported": a2a.ErrVersionNotSupported,
}

// toProtocol turns an error from the actors into the SDK's error, which
// its transports encode with the spec's code. The message is the domain
// error's text (safe to show); anything else is an internal error whose
// detail stays in the log.
func toProtocol(err error) error {
	if err == nil {
		return nil
	}
	var ae *a2a.Error
	if errors.As(err, &ae) {
		return err
	}
	de := kernel.AsError(err)
	if de == nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return a2a.NewError(a2a.ErrInternalError, "the request was cancelled")
		}
		for _, sentinel := range []error{a2a.ErrTaskNotFound, a2a.ErrInvalidParams, a2a.ErrUnsupportedOperation,
			a2a.ErrUnsupportedContentType, a2a.ErrTaskNotCancelable, a2a.ErrPushNotificationNotSupported} {
			if errors.Is(err, sentinel) {
				return err
			}
		}
		return a2a.NewError(a2a.ErrInternalError, "internal error")
	}
	if sentinel, ok := protocolErrors[de.Code]; ok {
		return a2a.NewError(sentinel, de.Msg)
	}
	switch de.Kind {
	case kernel.KindInvalid, kernel.KindTooLarge:
		return a2a.NewError(a2a.ErrInvalidParams, de.Msg)
	case kernel.KindNotFound:
		return a2a.NewError(a2a.ErrInvalidParams, de.Msg)
	case kernel.KindUnauthorized:
		return a2a.NewError(a2a.ErrUnauthenticated, de.Msg)
	case kernel.KindForbidden:
		return a2a.NewError(a2a.ErrUnauthorized, de.Msg)
	case kernel.KindUnsupported:
		return a2a.NewError(a2a.ErrUnsupportedOperation, de.Msg)
	}
	return a2a.NewError(a2a.ErrInternalError, de.Msg)
}

func kernelTooLarge() error {
	return kernel.Errorf(kernel.KindTooLarge, "message_too_large", "message exceeds %d bytes", maxMessageBytes)
}
