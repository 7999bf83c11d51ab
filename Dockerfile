# Arcade Pay as an AWS Lambda container image.
#
# Builds for linux/amd64 or linux/arm64 (the base image is multi-arch and nothing below is
# arch-specific). Lambda takes one architecture per image, matching the function's:
#   docker buildx build --platform linux/arm64 --provenance=false -t arcade-pay:arm64 .
# Replace ca.crt with your broker's CA (see its comment) before building.
FROM public.ecr.aws/lambda/python:3.13

# The dependencies first, so that a code change does not reinstall them.
COPY requirements.txt ${LAMBDA_TASK_ROOT}/
RUN pip install --no-cache-dir -r requirements.txt --target "${LAMBDA_TASK_ROOT}"

COPY arcade/ ${LAMBDA_TASK_ROOT}/arcade/
COPY app.py ca.crt ${LAMBDA_TASK_ROOT}/
# Lambda's task root is read-only: compile the app now, not at every cold start (pip has
# already compiled the dependencies).
RUN python -m compileall -q "${LAMBDA_TASK_ROOT}/arcade" "${LAMBDA_TASK_ROOT}/app.py"

CMD ["app.lambda_handler"]
