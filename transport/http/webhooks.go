package http

import (
	"bytes"
	"context"
	"net/url"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/kernel"
	"github.com/fangd/fangd/actors/webhook"
)

func (s *Server) webhookRoutes() {
	// Event webhooks (the seed's {event_type, url, secret}).
	s.api("GET", "/webhooks/events", s.listEventWebhooks)
	s.api("POST", "/webhooks/events", s.createEventWebhook)
	s.api("PUT", "/webhooks/events/{id}", s.updateEventWebhook)
	s.api("DELETE", "/webhooks/events/{id}", s.deleteEventWebhook)
	// Outbound webhooks ({name, url, events, ...}).
	s.api("GET", "/webhooks", s.listWebhooks)
	s.api("POST", "/webhooks", s.createWebhook)
	s.api("GET", "/webhooks/{id}", s.getWebhook)
	s.api("PUT", "/webhooks/{id}", s.updateWebhook)
	s.api("DELETE", "/webhooks/{id}", s.deleteWebhook)
	// Delivery state, for both kinds.
	s.api("POST", "/webhooks/{id}/test", s.testWebhook)
	s.api("GET", "/webhooks/{id}/deliveries", s.webhookDeliveries)
	s.api("GET", "/webhooks/{id}/dead-letters", s.webhookDeadLetters)
	s.api("POST", "/webhooks/{id}/replay", s.replayWebhook)
}

func (s *Server) engine() (*webhook.Engine, error) {
	if s.deps.Webhooks == nil {
		return nil, kernel.Unavailable("the webhook engine is not running")
	}
	return s.deps.Webhooks, nil
}

// webhookPage reads ?offset=&limit= (default and max 1000, above the
// [webhooks] max_endpoints default) and lists the webhooks of kind.
func (s *Server) webhookPage(ctx *fasthttp.RequestCtx, kind string) (views []webhook.View, offset, limit int, err error) {
	if offset, limit, err = pageParams(ctx, 1000, 1000); err != nil {
		return nil, 0, 0, err
	}
	e, err := s.engine()
	if err != nil {
		return nil, 0, 0, err
	}
	views, err = e.List(s.reqCtx(ctx), kind)
	return views, offset, limit, err
}

// engineBody is the engine and the decoded body a webhook write starts
// with; no engine is 503 before the body is read.
func engineBody[T any](s *Server, ctx *fasthttp.RequestCtx) (*webhook.Engine, T, error) {
	var b T
	e, err := s.engine()
	if err != nil {
		return nil, b, err
	}
	return e, b, decodeJSON(ctx, &b)
}

// hookWritten ends a webhook create (201) or update (200): the audit line
// names the hook (and, when created, its host: paths may carry tokens),
// the answer is its view.
func hookWritten(ctx *fasthttp.RequestCtx, label string, created bool, v webhook.View, err error) error {
	if err != nil {
		return err
	}
	if created {
		auditDetails(ctx, label+" "+v.ID+" created for "+urlHost(v.URL))
		writeJSON(ctx, fasthttp.StatusCreated, v)
		return nil
	}
	auditDetails(ctx, label+" "+v.ID+" updated")
	writeJSON(ctx, fasthttp.StatusOK, v)
	return nil
}

// urlHost is what audit entries say about a URL: its host only (paths and
// queries may carry tokens).
func urlHost(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Host
	}
	return "(invalid url)"
}

// eventWebhookBody is the seed's shape; LibreFang's handler takes
// "events" instead of "event_type", so both are accepted.
type eventWebhookBody struct {
	EventType *string   `json:"event_type"`
	Events    *[]string `json:"events"`
	URL       *string   `json:"url"`
	Secret    *string   `json:"secret"`
	Enabled   *bool     `json:"enabled"`
}

func (b *eventWebhookBody) patch() (webhook.Patch, error) {
	p := webhook.Patch{URL: b.URL, Secret: b.Secret, Enabled: b.Enabled, Events: b.Events}
	if b.EventType != nil {
		if b.Events != nil {
			return p, badRequest("invalid_input", `give "event_type" or "events", not both`)
		}
		p.Events = &[]string{*b.EventType}
	}
	return p, nil
}

// listEventWebhooks serves GET /api/webhooks/events?offset=&limit=
// (default and max 1000, above the [webhooks] max_endpoints default).
// LibreFang answers a bare array here: the total and the next page are in
// the X-Total-Count and Link headers.
func (s *Server) listEventWebhooks(ctx *fasthttp.RequestCtx) error {
	views, offset, limit, err := s.webhookPage(ctx, webhook.KindEvent)
	if err != nil {
		return err
	}
	setPageHeaders(ctx, len(views), offset, limit)
	writeJSON(ctx, fasthttp.StatusOK, page(views, offset, limit))
	return nil
}

func (s *Server) createEventWebhook(ctx *fasthttp.RequestCtx) error {
	e, b, err := engineBody[eventWebhookBody](s, ctx)
	if err != nil {
		return err
	}
	if b.EventType == nil && b.Events == nil {
		return badRequest("invalid_input", `"event_type" is required (a type such as "agent.spawned", a prefix "agent.*", or "*")`)
	}
	p, err := b.patch()
	if err != nil {
		return err
	}
	rc, cancel := s.reqContext(ctx)
	defer cancel()
	v, err := e.Create(rc, webhook.KindEvent, p)
	return hookWritten(ctx, "event webhook", true, v, err)
}

func (s *Server) updateEventWebhook(ctx *fasthttp.RequestCtx) error {
	e, b, err := engineBody[eventWebhookBody](s, ctx)
	if err != nil {
		return err
	}
	p, err := b.patch()
	if err != nil {
		return err
	}
	rc, cancel := s.reqContext(ctx)
	defer cancel()
	v, err := e.Update(rc, webhook.KindEvent, pathID(ctx), p)
	return hookWritten(ctx, "event webhook", false, v, err)
}

func (s *Server) deleteEventWebhook(ctx *fasthttp.RequestCtx) error {
	return s.deleteKind(ctx, webhook.KindEvent)
}
func (s *Server) deleteWebhook(ctx *fasthttp.RequestCtx) error {
	return s.deleteKind(ctx, webhook.KindOutbound)
}

func (s *Server) deleteKind(ctx *fasthttp.RequestCtx, kind string) error {
	e, err := s.engine()
	if err != nil {
		return err
	}
	err = e.Delete(s.reqCtx(ctx), kind, pathID(ctx))
	return replyNoContent(ctx, err, func() string { return kind + " webhook " + pathID(ctx) + " deleted" })
}

func pathID(ctx *fasthttp.RequestCtx) string {
	id, _ := ctx.UserValue("id").(string)
	return id
}

// reqContext bounds the URL check (DNS) and the actor round trip.
func (s *Server) reqContext(ctx *fasthttp.RequestCtx) (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.reqCtxWait(ctx), 2*kernel.DefaultAskTimeout)
}

type webhookBody struct {
	Name    *string            `json:"name"`
	URL     *string            `json:"url"`
	Events  *[]string          `json:"events"`
	Secret  *string            `json:"secret"`
	Enabled *bool              `json:"enabled"`
	Headers *map[string]string `json:"headers"`
}

func (b *webhookBody) patch() webhook.Patch {
	return webhook.Patch{Name: b.Name, URL: b.URL, Events: b.Events, Secret: b.Secret, Enabled: b.Enabled, Headers: b.Headers}
}

type webhookList struct {
	Webhooks []webhook.View `json:"webhooks"`
	pageInfo
}

// listWebhooks serves GET /api/webhooks?offset=&limit= (default and max
// 1000): the seed's {webhooks, total}, total counting every webhook, plus
// the paging fields.
func (s *Server) listWebhooks(ctx *fasthttp.RequestCtx) error {
	views, offset, limit, err := s.webhookPage(ctx, webhook.KindOutbound)
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, webhookList{Webhooks: page(views, offset, limit), pageInfo: pageOf(len(views), offset, limit)})
	return nil
}

func (s *Server) createWebhook(ctx *fasthttp.RequestCtx) error {
	e, b, err := engineBody[webhookBody](s, ctx)
	if err != nil {
		return err
	}
	rc, cancel := s.reqContext(ctx)
	defer cancel()
	v, err := e.Create(rc, webhook.KindOutbound, b.patch())
	return hookWritten(ctx, "webhook", true, v, err)
}

func (s *Server) getWebhook(ctx *fasthttp.RequestCtx) error {
	e, err := s.engine()
	if err != nil {
		return err
	}
	v, err := e.Get(s.reqCtx(ctx), webhook.KindOutbound, pathID(ctx))
	return reply(ctx, v, err)
}

func (s *Server) updateWebhook(ctx *fasthttp.RequestCtx) error {
	e, b, err := engineBody[webhookBody](s, ctx)
	if err != nil {
		return err
	}
	rc, cancel := s.reqContext(ctx)
	defer cancel()
	v, err := e.Update(rc, webhook.KindOutbound, pathID(ctx), b.patch())
	return hookWritten(ctx, "webhook", false, v, err)
}

func (s *Server) testWebhook(ctx *fasthttp.RequestCtx) error {
	e, err := s.engine()
	if err != nil {
		return err
	}
	res, err := e.Test(s.reqCtxWait(ctx), pathID(ctx))
	return replyAudited(ctx, res, err, func() string { return "webhook " + pathID(ctx) + " test sent" })
}

func (s *Server) webhookDeliveries(ctx *fasthttp.RequestCtx) error {
	return webhookHistory(s, ctx, "deliveries", 50, 200, (*webhook.Engine).Deliveries)
}

func (s *Server) webhookDeadLetters(ctx *fasthttp.RequestCtx) error {
	return webhookHistory(s, ctx, "dead_letters", 100, 1000, (*webhook.Engine).DeadLetters)
}

// webhookHistory answers one of a hook's histories as {<key>: rows,
// "total": n}, at most ?limit= rows (def when absent, 1 to max).
func webhookHistory[T any](s *Server, ctx *fasthttp.RequestCtx, key string, def, max int,
	read func(e *webhook.Engine, c context.Context, id string, limit int) ([]T, error)) error {
	e, err := s.engine()
	if err != nil {
		return err
	}
	limit, err := intQuery(ctx, def, 1, max, "limit")
	if err != nil {
		return err
	}
	rows, err := read(e, s.reqCtx(ctx), pathID(ctx), limit)
	if err != nil {
		return err
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{key: rows, "total": len(rows)})
	return nil
}

type replayBody struct {
	IDs []string `json:"ids"`
}

// replayWebhook serves POST /api/webhooks/{id}/replay with {ids?} (an
// empty body replays every dead letter).
func (s *Server) replayWebhook(ctx *fasthttp.RequestCtx) error {
	e, err := s.engine()
	if err != nil {
		return err
	}
	var b replayBody
	if len(bytes.TrimSpace(ctx.PostBody())) > 0 {
		if err := decodeJSON(ctx, &b); err != nil {
			return err
		}
	}
	if len(b.IDs) > 10000 {
		return badRequest("invalid_input", `"ids" may list at most 10000 messages`)
	}
	res, err := e.Replay(s.reqCtx(ctx), pathID(ctx), b.IDs)
	return replyAudited(ctx, res, err, func() string { return "webhook " + pathID(ctx) + " replayed dead letters" })
}
