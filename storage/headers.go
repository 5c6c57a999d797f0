package storage

import (
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Headers are the HTTP headers S3 stores with an object and serves back on
// every GET. They are part of what the object is to a browser, a CDN or a
// client that decompresses: a copy that loses Content-Encoding serves gzip
// bytes as if they were plain text. Info returns them and every write takes
// them, so a copy keeps them by handing one's Headers to the other.
type Headers struct {
	ContentType        string `json:"content_type,omitempty"`
	ContentEncoding    string `json:"content_encoding,omitempty"`
	ContentDisposition string `json:"content_disposition,omitempty"`
	CacheControl       string `json:"cache_control,omitempty"`
	ContentLanguage    string `json:"content_language,omitempty"`
	// Expires is the header's raw value: usually an HTTP date, but S3 keeps
	// whatever it was sent ("0" is a common "already expired"), and a copy
	// keeps it exactly.
	Expires string `json:"expires,omitempty"`
}

// headersFrom reads the header fields of an SDK answer (HeadObject and
// GetObject have the same fields but no common type).
func headersFrom(contentType, encoding, disposition, cacheControl, language, expires *string) Headers {
	return Headers{ContentType: aws.ToString(contentType), ContentEncoding: aws.ToString(encoding),
		ContentDisposition: aws.ToString(disposition), CacheControl: aws.ToString(cacheControl),
		ContentLanguage: aws.ToString(language), Expires: aws.ToString(expires)}
}

// setOn writes h into the header fields of an SDK write input (PutObject,
// CreateMultipartUpload and CopyObject have the same fields but no common
// type) and returns the options the call needs. The SDK sends Expires from a
// time.Time, as an IMF-fixdate; any other spelling goes out raw, so the
// stored value is the one we were given.
func (h Headers) setOn(contentType, encoding, disposition, cacheControl, language **string, expires **time.Time) []func(*s3.Options) {
	for _, f := range []struct {
		dst **string
		v   string
	}{{contentType, h.ContentType}, {encoding, h.ContentEncoding}, {disposition, h.ContentDisposition},
		{cacheControl, h.CacheControl}, {language, h.ContentLanguage}} {
		if f.v != "" {
			*f.dst = aws.String(f.v)
		}
	}
	if h.Expires == "" {
		return nil
	}
	if t, err := http.ParseTime(h.Expires); err == nil && t.UTC().Format(http.TimeFormat) == h.Expires {
		*expires = &t
		return nil
	}
	return []func(*s3.Options){func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, smithyhttp.SetHeaderValue("Expires", h.Expires))
	}}
}
