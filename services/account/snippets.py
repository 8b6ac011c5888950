"""Copy-paste code for the developer console's test tool (the guide's Q5: "支持哪些编程语言"):
the two calls an app's server makes after the redirect back, in curl, Python, Node.js, PHP, Java,
Go, C# and Ruby. (1) exchange the code (``POST /api/oauth2/token``, client_secret_post, guide
"步骤 4"), (2) read the user (``GET /api/oauth2/userinfo`` with the access token, guide "步骤 5").

Every snippet reads the code from the environment variable ``CODE`` and the secret from
``CLIENT_SECRET`` (never in source, as the guide's security notes ask) and prints the token response
and then the userinfo response. For a public client (no secret, RFC 7636) the same code sends
``code_verifier`` from ``CODE_VERIFIER`` instead. The Python, Node.js and curl ones are run against the real stack by
tests/integration/test_developer_tool.py.
"""

from __future__ import annotations

LANGUAGES = (
    ("curl", "curl"),
    ("python", "Python"),
    ("node", "Node.js"),
    ("php", "PHP"),
    ("java", "Java"),
    ("go", "Go"),
    ("csharp", "C#"),
    ("ruby", "Ruby"),
)

_TEMPLATES = {
    "curl": """\
# CODE: the code from the redirect; CLIENT_SECRET: from your server's environment
TOKEN_JSON=$(curl -sS -X POST '__BASE__/api/oauth2/token' \\
  --data-urlencode 'grant_type=authorization_code' \\
  --data-urlencode "code=$CODE" \\
  --data-urlencode 'redirect_uri=__REDIRECT_URI__' \\
  --data-urlencode 'client_id=__CLIENT_ID__' \\
  --data-urlencode "client_secret=$CLIENT_SECRET")
echo "$TOKEN_JSON"
ACCESS_TOKEN=$(printf '%s' "$TOKEN_JSON" | sed -n 's/.*"access_token" *: *"\\([^"]*\\)".*/\\1/p')
curl -sS '__BASE__/api/oauth2/userinfo' -H "Authorization: Bearer $ACCESS_TOKEN"
""",
    "python": """\
import json
import os
import urllib.parse
import urllib.request

BASE = "__BASE__"
form = urllib.parse.urlencode({
    "grant_type": "authorization_code",
    "code": os.environ["CODE"],
    "redirect_uri": "__REDIRECT_URI__",
    "client_id": "__CLIENT_ID__",
    "client_secret": os.environ["CLIENT_SECRET"],
}).encode()
with urllib.request.urlopen(urllib.request.Request(BASE + "/api/oauth2/token", data=form)) as r:
    tokens = json.load(r)
print(json.dumps(tokens))
request = urllib.request.Request(
    BASE + "/api/oauth2/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]}
)
with urllib.request.urlopen(request) as r:
    print(json.dumps(json.load(r), ensure_ascii=False))
""",
    "node": """\
// Node.js 18+ (built-in fetch)
const BASE = '__BASE__';
const tokenResponse = await fetch(`${BASE}/api/oauth2/token`, {
  method: 'POST',
  body: new URLSearchParams({
    grant_type: 'authorization_code',
    code: process.env.CODE,
    redirect_uri: '__REDIRECT_URI__',
    client_id: '__CLIENT_ID__',
    client_secret: process.env.CLIENT_SECRET,
  }),
});
const tokens = await tokenResponse.json();
console.log(JSON.stringify(tokens));
const userinfo = await fetch(`${BASE}/api/oauth2/userinfo`, {
  headers: { Authorization: `Bearer ${tokens.access_token}` },
});
console.log(JSON.stringify(await userinfo.json()));
""",
    "php": """\
<?php
$base = '__BASE__';
$ch = curl_init("$base/api/oauth2/token");
curl_setopt_array($ch, [
    CURLOPT_POST => true,
    CURLOPT_RETURNTRANSFER => true,
    CURLOPT_POSTFIELDS => http_build_query([
        'grant_type' => 'authorization_code',
        'code' => getenv('CODE'),
        'redirect_uri' => '__REDIRECT_URI__',
        'client_id' => '__CLIENT_ID__',
        'client_secret' => getenv('CLIENT_SECRET'),
    ]),
]);
$tokens = json_decode(curl_exec($ch), true);
echo json_encode($tokens), "\\n";
$ch = curl_init("$base/api/oauth2/userinfo");
curl_setopt_array($ch, [
    CURLOPT_RETURNTRANSFER => true,
    CURLOPT_HTTPHEADER => ['Authorization: Bearer ' . $tokens['access_token']],
]);
echo curl_exec($ch), "\\n";
""",
    "java": """\
// Java 11+ (java.net.http); a JSON library such as Jackson reads access_token in a real app
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.*;
import java.nio.charset.StandardCharsets;

public class OAuthDemo {
    public static void main(String[] args) throws Exception {
        String base = "__BASE__";
        String form = "grant_type=authorization_code"
            + "&code=" + URLEncoder.encode(System.getenv("CODE"), StandardCharsets.UTF_8)
            + "&redirect_uri=" + URLEncoder.encode("__REDIRECT_URI__", StandardCharsets.UTF_8)
            + "&client_id=__CLIENT_ID__"
            + "&client_secret=" + URLEncoder.encode(System.getenv("CLIENT_SECRET"), StandardCharsets.UTF_8);
        HttpClient http = HttpClient.newHttpClient();
        HttpResponse<String> tokens = http.send(HttpRequest.newBuilder(URI.create(base + "/api/oauth2/token"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .POST(HttpRequest.BodyPublishers.ofString(form)).build(), HttpResponse.BodyHandlers.ofString());
        System.out.println(tokens.body());
        String accessToken = tokens.body().replaceAll(".*\\"access_token\\"\\\\s*:\\\\s*\\"([^\\"]+)\\".*", "$1");
        HttpResponse<String> user = http.send(HttpRequest.newBuilder(URI.create(base + "/api/oauth2/userinfo"))
            .header("Authorization", "Bearer " + accessToken).build(), HttpResponse.BodyHandlers.ofString());
        System.out.println(user.body());
    }
}
""",
    "go": """\
package main

import (
\t"encoding/json"
\t"fmt"
\t"io"
\t"net/http"
\t"net/url"
\t"os"
)

func main() {
\tbase := "__BASE__"
\tresp, err := http.PostForm(base+"/api/oauth2/token", url.Values{
\t\t"grant_type":    {"authorization_code"},
\t\t"code":          {os.Getenv("CODE")},
\t\t"redirect_uri":  {"__REDIRECT_URI__"},
\t\t"client_id":     {"__CLIENT_ID__"},
\t\t"client_secret": {os.Getenv("CLIENT_SECRET")},
\t})
\tif err != nil {
\t\tpanic(err)
\t}
\tdefer resp.Body.Close()
\tvar tokens map[string]any
\tjson.NewDecoder(resp.Body).Decode(&tokens)
\tfmt.Println(tokens)
\treq, _ := http.NewRequest("GET", base+"/api/oauth2/userinfo", nil)
\treq.Header.Set("Authorization", "Bearer "+fmt.Sprint(tokens["access_token"]))
\tuser, err := http.DefaultClient.Do(req)
\tif err != nil {
\t\tpanic(err)
\t}
\tdefer user.Body.Close()
\tbody, _ := io.ReadAll(user.Body)
\tfmt.Println(string(body))
}
""",
    "csharp": """\
// .NET 6+ (top-level statements)
using System.Net.Http.Headers;
using System.Text.Json;

var baseUrl = "__BASE__";
using var http = new HttpClient();
var tokenResponse = await http.PostAsync($"{baseUrl}/api/oauth2/token", new FormUrlEncodedContent(new Dictionary<string, string>
{
    ["grant_type"] = "authorization_code",
    ["code"] = Environment.GetEnvironmentVariable("CODE")!,
    ["redirect_uri"] = "__REDIRECT_URI__",
    ["client_id"] = "__CLIENT_ID__",
    ["client_secret"] = Environment.GetEnvironmentVariable("CLIENT_SECRET")!,
}));
var tokens = await tokenResponse.Content.ReadAsStringAsync();
Console.WriteLine(tokens);
var accessToken = JsonDocument.Parse(tokens).RootElement.GetProperty("access_token").GetString();
http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", accessToken);
Console.WriteLine(await http.GetStringAsync($"{baseUrl}/api/oauth2/userinfo"));
""",
    "ruby": """\
require 'json'
require 'net/http'

base = '__BASE__'
response = Net::HTTP.post_form(URI("#{base}/api/oauth2/token"),
  'grant_type' => 'authorization_code',
  'code' => ENV.fetch('CODE'),
  'redirect_uri' => '__REDIRECT_URI__',
  'client_id' => '__CLIENT_ID__',
  'client_secret' => ENV.fetch('CLIENT_SECRET'))
tokens = JSON.parse(response.body)
puts tokens.to_json
uri = URI("#{base}/api/oauth2/userinfo")
request = Net::HTTP::Get.new(uri)
request['Authorization'] = "Bearer #{tokens['access_token']}"
user = Net::HTTP.start(uri.hostname, uri.port, use_ssl: uri.scheme == 'https') { |h| h.request(request) }
puts user.body
""",
}


def snippets(base_url: str, client_id: str, redirect_uri: str, *, public: bool = False) -> list[tuple[str, str, str]]:
    """(key, label, code) per language, filled in for one app (``public``: PKCE, no secret)."""
    values = {"__BASE__": base_url, "__CLIENT_ID__": client_id, "__REDIRECT_URI__": redirect_uri}
    if public:
        values |= {"client_secret": "code_verifier", "CLIENT_SECRET": "CODE_VERIFIER"}
    out = []
    for key, label in LANGUAGES:
        code = _TEMPLATES[key]
        for marker, value in values.items():
            code = code.replace(marker, value)
        out.append((key, label, code))
    return out
