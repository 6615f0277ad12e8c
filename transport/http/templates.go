package http

import (
	"github.com/valyala/fasthttp"

	"github.com/fangd/fangd/actors/agent"
	"github.com/fangd/fangd/actors/kernel"
)

// LibreFang's agent template routes (routes/agent_templates.rs), over the
// templates fangd ships in its binary (agent.Templates).

// templateErr makes a name that cannot be a template a 404,
// as in LibreFang (only the create route calls it a bad request).
func templateErr(err error) error {
	if ke := kernel.AsError(err); ke != nil && ke.Code == "invalid_template_name" {
		return kernel.Errorf(kernel.KindNotFound, "template_not_found", "%s", ke.Msg)
	}
	return err
}

// listTemplates serves GET /api/templates: {templates: [{name,
// description}], total}.
func (s *Server) listTemplates(ctx *fasthttp.RequestCtx) error {
	list := agent.Templates()
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Templates []agent.TemplateInfo `json:"templates"`
		Total     int                  `json:"total"`
	}{list, len(list)})
	return nil
}

// getTemplate serves GET /api/templates/{name}: {name, manifest{...},
// manifest_toml}.
func (s *Server) getTemplate(ctx *fasthttp.RequestCtx) error {
	m, text, err := agent.TemplateDetail(pathName(ctx))
	if err != nil {
		return templateErr(err)
	}
	writeJSON(ctx, fasthttp.StatusOK, struct {
		Name         string                 `json:"name"`
		Manifest     agent.TemplateManifest `json:"manifest"`
		ManifestTOML string                 `json:"manifest_toml"`
	}{pathName(ctx), m, text})
	return nil
}

// getTemplateTOML serves GET /api/templates/{name}/toml: the agent.toml
// as text/plain.
func (s *Server) getTemplateTOML(ctx *fasthttp.RequestCtx) error {
	text, err := agent.Template(pathName(ctx))
	if err != nil {
		return templateErr(err)
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(text)
	return nil
}
