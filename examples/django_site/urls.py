from django.http import JsonResponse
from django.urls import path


def hello(request):
    return JsonResponse({"framework": "django", "path": request.path})


urlpatterns = [path("hello/", hello)]
