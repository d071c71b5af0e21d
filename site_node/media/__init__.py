"""The media engine the site controls: rtpengine over its ng protocol (relay, prompts, digits).

Python never carries audio on the call path: these adapters only send rtpengine commands and
read the digits it reports.
"""
