package http

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/channel"
	"github.com/fangd/fangd/actors/kernel"
)

// webhookBodyCap is the most a platform callback may carry (LibreFang's
// WEBHOOK_BODY_LIMIT).
const webhookBodyCap = 1 << 20

func (s *Server) channelRoutes() {
	s.api("GET", "/channels", s.listChannels)
	s.api("POST", "/channels/reload", s.reloadChannels)
	s.api("GET", "/channels/registry", s.channelRegistry)
	s.api("POST", "/channels/sidecar/{name}/configure", s.configureSidecarChannel)
	s.api("DELETE", "/channels/sidecar/{name}", s.deleteSidecarChannel)
	s.api("GET", "/channels/{name}/qr", s.channelQR)
	s.api("GET", "/channels/{name}", s.getChannel)
	s.api("POST", "/channels/{name}/configure", s.configureChannel)
	s.api("DELETE", "/channels/{name}/configure", s.deleteChannel)
	s.api("POST", "/channels/{name}/test", s.testChannel)
	// Platform callbacks: outside API auth (each adapter checks its
	// platform's signature), only failures audited.
	s.handle("POST", "/channels/{name}/webhook", s.channelWebhook, routeOpts{public: true, platformCallback: true})
	s.handle("GET", "/channels/{name}/webhook", s.channelWebhook, routeOpts{public: true, platformCallback: true})
}

func (s *Server) channels() (*channel.Service, error) {
	if s.deps.Channels == nil {
		return nil, kernel.Errorf(kernel.KindUnavailable, "channels_unavailable", "the channels subsystem is not running")
	}
	return s.deps.Channels, nil
}

func pathName(ctx *fasthttp.RequestCtx) string {
	n, _ := ctx.UserValue("name").(string)
	return n
}

// listChannels serves GET /api/channels[?configured=true][&offset=&limit=]:
// all 44 registry adapters plus extra instances, or only the configured
// ones, a page at a time (default and max 1000, the [channels]
// max_channels default).
func (s *Server) listChannels(ctx *fasthttp.RequestCtx) error {
	offset, limit, err := pageParams(ctx, 1000, 1000)
	if err != nil {
		return err
	}
	svc, err := s.channels()
	if err != nil {
		return err
	}
	onlyConfigured := false
	if ctx.QueryArgs().Has("configured") {
		switch string(ctx.QueryArgs().Peek("configured")) {
		case "true", "1", "":
			onlyConfigured = true
		case "false", "0":
		default:
			return badRequest("invalid_query", `query parameter "configured" must be true or false`)
		}
	}
	list, err := svc.List(s.reqCtx(ctx), onlyConfigured)
	if err != nil {
		return err
	}
	configured := 0
	for _, v := range list {
		if v.Configured {
			configured++
		}
	}
	writeChannelList(ctx, channelPage{Channels: page(list, offset, limit), Configured: configured,
		pageInfo: pageOf(len(list), offset, limit)})
	return nil
}

// channelPage is one page of GET /api/channels: the seed's channels and
// total (every channel of the list, not this page's), configured_count
// over the whole list, and the paging fields.
type channelPage struct {
	Channels   []channel.View `json:"channels"`
	Configured int            `json:"configured_count"`
	pageInfo
}

// writeChannelList writes the page (the bytes writeJSON would write for
// it, keys in that order) one channel at a time as the client
// reads it. A thousand channels are a few MB of JSON: encoded whole, as
// writeJSON does, they cost that twice (the encoder's buffer and the
// response body, both kept in pools afterwards), and a dashboard polling
// the list kept the daemon's heap high.
func writeChannelList(ctx *fasthttp.RequestCtx, p channelPage) {
	list := p.Channels
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/json")
	ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		w.WriteString(`{"channels":[`)
		for i := range list {
			buf.Reset()
			if err := enc.Encode(&list[i]); err != nil {
				return // plain data cannot fail to encode; a cut body is invalid JSON
			}
			if i > 0 {
				w.WriteByte(',')
			}
			w.Write(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
		}
		next := "null"
		if p.Next != nil {
			next = strconv.Itoa(*p.Next)
		}
		fmt.Fprintf(w, "],\"configured_count\":%d,\"total\":%d,\"offset\":%d,\"limit\":%d,\"next_offset\":%s}\n",
			p.Configured, p.Total, p.Offset, p.Limit, next)
	})
}

func (s *Server) getChannel(ctx *fasthttp.RequestCtx) error {
	svc, err := s.channels()
	if err != nil {
		return err
	}
	v, err := svc.Get(s.reqCtx(ctx), pathName(ctx))
	if err == nil && v.State == channel.StateRemote && v.Node != "" && s.hosts != nil {
		// The live status is on the host: route there. If the host does
		// not answer (or this is a forwarded request), this node's view
		// ("remote", naming the node) is the answer.
		if s.hosts.route(ctx, &channel.HostedElsewhere{Channel: v.Name, Node: v.Node}) == nil {
			return nil
		}
	}
	return reply(ctx, v, err)
}

// configureChannel serves POST /api/channels/{name}/configure with the
// seed's flat body or LibreFang's {"fields": {...}}.
func (s *Server) configureChannel(ctx *fasthttp.RequestCtx) error {
	svc, err := s.channels()
	if err != nil {
		return err
	}
	var body map[string]any
	if err := decodeJSON(ctx, &body); err != nil {
		return err
	}
	if body == nil {
		return badRequest("invalid_json", "the body must be a JSON object")
	}
	name := pathName(ctx)
	res, err := svc.Configure(s.reqCtxWait(ctx), name, body)
	if err != nil {
		return err
	}
	// Field names only: values may be secrets.
	auditDetails(ctx, fmt.Sprintf("channel %s (%s) configured; fields: %s", name, res.Adapter, strings.Join(res.Fields, ", ")))
	writeJSON(ctx, fasthttp.StatusOK, res)
	return nil
}

func (s *Server) deleteChannel(ctx *fasthttp.RequestCtx) error {
	svc, err := s.channels()
	if err != nil {
		return err
	}
	name := pathName(ctx)
	err = svc.Remove(s.reqCtx(ctx), name)
	return replyNoContent(ctx, err, func() string { return "channel " + name + " deleted with its secrets and queued messages" })
}

// testChannel serves POST /api/channels/{name}/test {"chat_id"?} (or
// channel_id); the body is optional.
func (s *Server) testChannel(ctx *fasthttp.RequestCtx) error {
	svc, err := s.channels()
	if err != nil {
		return err
	}
	var body struct {
		ChatID    any `json:"chat_id"`
		ChannelID any `json:"channel_id"`
	}
	if len(strings.TrimSpace(string(ctx.PostBody()))) > 0 {
		if err := decodeJSON(ctx, &body); err != nil {
			return err
		}
	}
	target := ""
	for _, v := range []any{body.ChatID, body.ChannelID} {
		switch x := v.(type) {
		case nil:
		case string:
			if target == "" {
				target = strings.TrimSpace(x)
			}
		case float64:
			if target == "" {
				target = fmt.Sprintf("%.0f", x)
			}
		default:
			return badRequest("invalid_field", "chat_id and channel_id must be strings or numbers")
		}
	}
	name := pathName(ctx)
	res, err := svc.Test(s.reqCtxWait(ctx), name, target)
	if err != nil {
		return err
	}
	if target != "" {
		auditDetails(ctx, "test message sent through channel "+name+" to "+target)
	}
	writeJSON(ctx, fasthttp.StatusOK, res)
	return nil
}

func (s *Server) reloadChannels(ctx *fasthttp.RequestCtx) error {
	svc, err := s.channels()
	if err != nil {
		return err
	}
	res, err := svc.Reload(s.reqCtxWait(ctx))
	return replyAudited(ctx, res, err, func() string {
		return fmt.Sprintf("channels reloaded from config.toml: started %v, stopped %v, restarted %v",
			res.Started, res.Stopped, res.Restarted)
	})
}

// channelWebhook hands a platform callback to its channel, which verifies
// the platform's signature before routing anything.
func (s *Server) channelWebhook(ctx *fasthttp.RequestCtx) error {
	svc, err := s.channels()
	if err != nil {
		return err
	}
	if len(ctx.PostBody()) > webhookBodyCap || ctx.Request.Header.ContentLength() > webhookBodyCap {
		return &apiError{fasthttp.StatusRequestEntityTooLarge, "body_too_large", "webhook body exceeds 1 MiB"}
	}
	req := &channel.WebhookRequest{Method: string(ctx.Method()), Query: url.Values{}, Header: http.Header{},
		Body: append([]byte(nil), ctx.PostBody()...), RemoteIP: clientIP(ctx).String()}
	for k, v := range ctx.QueryArgs().All() {
		req.Query.Add(string(k), string(v))
	}
	for k, v := range ctx.Request.Header.All() {
		req.Header.Add(string(k), string(v))
	}
	resp, err := svc.Webhook(s.reqCtx(ctx), pathName(ctx), req)
	if err != nil {
		return err
	}
	if resp == nil {
		writeJSON(ctx, fasthttp.StatusOK, struct{}{})
		return nil
	}
	status := resp.Status
	if status == 0 {
		status = fasthttp.StatusOK
	}
	ct := resp.ContentType
	if ct == "" {
		ct = "application/json"
		if len(resp.Body) == 0 {
			resp.Body = []byte("{}")
		}
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType(ct)
	ctx.SetBody(resp.Body)
	return nil
}
