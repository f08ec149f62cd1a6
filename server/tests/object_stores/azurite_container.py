"""Creates a container on the Azurite emulator (SharedKey-signed PUT)."""
import base64, hashlib, hmac, sys, urllib.request
from email.utils import formatdate
account = "devstoreaccount1"
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
endpoint, container = sys.argv[1], sys.argv[2]
date = formatdate(usegmt=True)
version = "2021-08-06"
canon_headers = f"x-ms-date:{date}\nx-ms-version:{version}\n"
canon_resource = f"/{account}/{account}/{container}\nrestype:container"
to_sign = "PUT\n\n\n\n\n\n\n\n\n\n\n\n" + canon_headers + canon_resource
sig = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
import http.client, urllib.parse
u = urllib.parse.urlparse(endpoint)
conn = http.client.HTTPConnection(u.hostname, u.port)
conn.request("PUT", f"/{account}/{container}?restype=container", body=b"",
    headers={"x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{sig}", "Content-Length": "0"})
r = conn.getresponse()
print(r.status, r.read()[:200])
sys.exit(0 if r.status in (201, 409) else 1)
