package dashboard

import (
	"reflect"
	"slices"
)

// Test hooks for the OpenAPI test (dashboard_test), which checks the
// document against what the server registers and the Go types it decodes
// and encodes.

// APIPatterns are the ServeMux patterns of the versioned API, as
// registered on the server's mux.
func (s *Server) APIPatterns() []string { return slices.Clone(s.apiPatterns) }

// BodyType is a Go type the versioned API decodes or encodes, and where:
// Status "" is the request body.
type BodyType struct {
	Method, Path, Status string
	Type                 reflect.Type
}

// APIBodyTypes lists the handlers' body types by hand, apart from the
// route table the document is built from, so that a type the document
// forgets shows up here.
func APIBodyTypes() []BodyType {
	tr := reflect.TypeFor[apiTransfer]()
	return []BodyType{
		{"POST", "/api/v1/transfers", "", reflect.TypeFor[enqueueRequest]()},
		{"POST", "/api/v1/transfers", "201", tr},
		{"POST", "/api/v1/transfers", "200", tr},
		{"GET", "/api/v1/transfers", "200", reflect.TypeFor[transferPage]()},
		{"GET", "/api/v1/transfers/{id}", "200", tr},
		{"POST", "/api/v1/transfers/{id}/cancel", "202", reflect.TypeFor[cancelResult]()},
		{"GET", "/api/v1/transfers/{id}/parts", "200", reflect.TypeFor[partsBody]()},
		{"GET", "/api/v1/transfers/{id}/report", "200", reflect.TypeFor[reportBody]()},
		{"GET", "/api/v1/throughput", "200", reflect.TypeFor[throughputBody]()},
		{"GET", "/api/v1/workers", "200", reflect.TypeFor[workersBody]()},
	}
}

// ErrorType is the body of every error answer.
var ErrorType = reflect.TypeFor[apiError]()

// PayloadTypes are the payload structs POST /api/v1/transfers accepts, by
// API type name.
func PayloadTypes() map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for name, t := range apiTypes {
		out[name] = t.payload
	}
	return out
}

// JSONFields are the JSON names of a struct's fields as encoding/json
// sees them (embedded structs flattened).
func JSONFields(t reflect.Type) map[string]reflect.StructField { return jsonFields(t) }
