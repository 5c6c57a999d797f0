package dashboard

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"slices"

	"go.uber.org/zap"
)

//go:embed web/templates/*.html
var templateFS embed.FS

//go:embed web/static
var staticFS embed.FS

// pageCSP allows the dashboard's own scripts, styles and API only.
const pageCSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// pages renders the HTML pages.
type pages struct {
	index    *template.Template
	transfer *template.Template
	static   fs.FS
}

func newPages() (*pages, error) {
	parse := func(name string) (*template.Template, error) {
		t, err := template.ParseFS(templateFS, "web/templates/layout.html", "web/templates/"+name)
		if err != nil {
			return nil, fmt.Errorf("dashboard: parse template %s: %w", name, err)
		}
		return t, nil
	}
	index, err := parse("index.html")
	if err != nil {
		return nil, err
	}
	transfer, err := parse("transfer.html")
	if err != nil {
		return nil, err
	}
	static, err := fs.Sub(staticFS, "web/static")
	if err != nil {
		return nil, fmt.Errorf("dashboard: static files: %w", err)
	}
	return &pages{index: index, transfer: transfer, static: static}, nil
}

func (p *pages) staticHandler() http.Handler {
	files := http.StripPrefix("/static/", http.FileServerFS(p.static))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// pageData is what the templates see.
type pageData struct {
	Title      string
	ReadOnly   bool
	TaskID     string // the detail page's task
	Monitoring string // asynqmon's path
	// Queues are the asynq queues known when the page was rendered: the
	// front page's queue filter suggests them (any name can be typed).
	Queues []string
}

func (s *Server) render(w http.ResponseWriter, t *template.Template, data pageData) {
	data.ReadOnly = s.cfg.ReadOnly
	data.Monitoring = MonitoringPath + "/"
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		s.log.Error("dashboard: render page", zap.Error(err))
		http.Error(w, "rendering the page failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("Cache-Control", "no-store")
	_, _ = buf.WriteTo(w)
}

func (s *Server) handleIndexPage(w http.ResponseWriter, r *http.Request) {
	// The queue names only help filling in the filter: without Redis the
	// page still renders (it says so itself once its stream fails).
	queues, err := s.client.Inspector().Queues()
	if err != nil {
		s.log.Warn("dashboard: list queues for the filter", zap.Error(err))
	}
	slices.Sort(queues)
	s.render(w, s.pages.index, pageData{Title: "Transfers", Queues: queues})
}

func (s *Server) handleTransferPage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.render(w, s.pages.transfer, pageData{Title: "Transfer " + id, TaskID: id})
}
