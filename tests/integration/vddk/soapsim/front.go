package main

// The TLS front between libvirt's ESX driver and the simulator.
//
// libvirt (esx_vi.c) deserializes every AnyType value, including each item of an
// "ArrayOfXxx" value, only if it carries an xsi:type attribute. The simulator writes the
// array's own type but leaves its items untyped, e.g.
//   <val xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="HostSystem">..
// and libvirt fails with "AnyType is missing 'type' property". The front types the items.
// It also words the login fault the way ESXi does. /folder/ downloads pass through.

import (
	"bytes"
	"crypto/tls"
	"io/ioutil"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// XML Schema names of the primitive item types (array "ArrayOfString" holds <string>)
var primitives = map[string]bool{
	"string": true, "int": true, "long": true, "short": true, "byte": true, "boolean": true,
	"dateTime": true, "float": true, "double": true, "base64Binary": true, "anyURI": true,
}

// an element whose xsi:type is ArrayOfXxx: 1 element name, 2 the xsi prefix, 3 Xxx
var arrayTag = regexp.MustCompile(`<([A-Za-z][\w]*)\s[^>]*?([A-Za-z][\w.-]*):type="ArrayOf([A-Za-z]\w*)"[^>]*>`)

const esxiLoginFault = "Cannot complete login due to an incorrect user name or password."

// typeItems returns body with an xsi:type on every untyped item of every array value.
func typeItems(body []byte) []byte {
	var out bytes.Buffer
	for {
		m := arrayTag.FindSubmatchIndex(body)
		if m == nil {
			out.Write(body)
			return out.Bytes()
		}
		elem, prefix, item := string(body[m[2]:m[3]]), string(body[m[4]:m[5]]), string(body[m[6]:m[7]])
		out.Write(body[:m[1]])
		body = body[m[1]:]
		end := bytes.Index(body, []byte("</"+elem+">"))
		if end < 0 {
			continue
		}
		child, typ := item, item
		if lower := strings.ToLower(item[:1]) + item[1:]; primitives[lower] {
			child, typ = lower, "xsd:"+lower
		}
		open := regexp.MustCompile(`<` + regexp.QuoteMeta(child) + `(\s[^>]*)?>`)
		out.Write(open.ReplaceAllFunc(body[:end], func(tag []byte) []byte {
			if bytes.Contains(tag, []byte(":type=")) {
				return tag
			}
			return append([]byte("<"+child+" "+prefix+`:type="`+typ+`"`), tag[1+len(child):]...)
		}))
		body = body[end:]
	}
}

func fixResponse(r *http.Response) error {
	if !strings.HasPrefix(r.Request.URL.Path, "/sdk") {
		log.Printf("front: %s %s -> %d", r.Request.Method, r.Request.URL.Path, r.StatusCode)
	}
	if !strings.Contains(r.Header.Get("Content-Type"), "xml") {
		return nil
	}
	body, err := ioutil.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		return err
	}
	body = typeItems(body)
	body = bytes.Replace(body, []byte("<faultstring>Login failure</faultstring>"),
		[]byte("<faultstring>"+esxiLoginFault+"</faultstring>"), 1)
	r.Body = ioutil.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// serveFront listens on addr with TLS and proxies to the simulator; returns the real address.
func serveFront(addr string, backend *url.URL, cert, key string) (*http.Server, string, error) {
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: backend.Scheme, Host: backend.Host})
	proxy.ModifyResponse = fixResponse
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: proxy, TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}}}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != http.ErrServerClosed {
			log.Printf("front: %v", err)
		}
	}()
	return srv, ln.Addr().String(), nil
}
